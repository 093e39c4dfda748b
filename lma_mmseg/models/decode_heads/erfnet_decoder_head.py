"""The decoder half of mmseg's ERFNet plus its FCN classifier, as a head."""
import torch
import torch.nn as nn
from mmseg.models.backbones.erfnet import NonBottleneck1d, UpsamplerBlock
from mmseg.models.decode_heads.fcn_head import FCNHead
from mmseg.registry import MODELS


@MODELS.register_module()
class ERFNetDecoderHead(FCNHead):
    """Decoder of ERFNet followed by mmseg's FCN classifier.

    mmseg's ERFNet model is ``ERFNet`` (encoder + decoder, a backbone) with
    an :class:`FCNHead` on its 1/2-scale, 16-channel output. This head holds
    the decoder blocks (``self.decoder``, the same module list as mmseg's
    ``ERFNet.decoder``) and the FCN layers (``self.convs``, ``self.conv_cat``,
    ``self.conv_seg``, inherited from :class:`FCNHead`), so the
    ``backbone.decoder.*`` keys of an mmseg ERFNet checkpoint become
    ``decode_head.decoder.*`` and the ``decode_head.*`` keys load unchanged.

    Args:
        in_channels (int): Channels of the encoder (or neck) feature map the
            decoder reads. Default: 128.
        channels (int): Channels of the FCN conv layers. Default: 128.
        dec_upsample_channels (Sequence[int]): Kept for config compatibility
            with mmseg's ERFNet, which uses it only for its length; it must
            equal ``dec_non_bottleneck_channels``. Default: (64, 16).
        dec_stages_non_bottleneck (Sequence[int]): Non-bottleneck blocks after
            each upsampler. Default: (2, 2).
        dec_non_bottleneck_channels (Sequence[int]): Output channels of each
            upsampler and of its non-bottleneck blocks. Default: (64, 16).
        block_conv_cfg (dict | None): Conv config of the decoder blocks.
        block_norm_cfg (dict): Norm config of the decoder blocks; mmseg's
            ERFNet always uses ``dict(type='BN', eps=1e-3)``.
        block_act_cfg (dict): Activation config of the decoder blocks.
        num_convs (int): FCN conv layers after the decoder. Default: 1.
        kernel_size (int): Kernel size of the FCN convs. Default: 3.
        concat_input (bool): Concatenate the decoder output to the FCN
            convs' output before the classifier. Default: False.
        dilation (int): Dilation of the FCN convs. Default: 1.
        **kwargs: Other arguments of :class:`BaseDecodeHead` (num_classes,
            dropout_ratio, norm_cfg, align_corners, loss_decode, in_index,
            ...). ``input_transform`` must be None (one input map).

    Shapes:
        input: a sequence of feature maps; ``inputs[in_index]`` has shape
        (B, in_channels, h, w) (1/8 of the image for ERFNet).
        output: logits of shape (B, num_classes, h * 2**n, w * 2**n), n being
        the number of upsamplers (1/2 of the image for ERFNet).
    """

    def __init__(self,
                 in_channels=128,
                 channels=128,
                 dec_upsample_channels=(64, 16),
                 dec_stages_non_bottleneck=(2, 2),
                 dec_non_bottleneck_channels=(64, 16),
                 block_conv_cfg=None,
                 block_norm_cfg=dict(type='BN', eps=1e-3),
                 block_act_cfg=dict(type='ReLU'),
                 num_convs=1,
                 kernel_size=3,
                 concat_input=False,
                 dilation=1,
                 **kwargs):
        dec_upsample_channels = tuple(dec_upsample_channels)
        dec_stages_non_bottleneck = tuple(dec_stages_non_bottleneck)
        dec_non_bottleneck_channels = tuple(dec_non_bottleneck_channels)
        if not isinstance(in_channels, int):
            raise TypeError('ERFNetDecoderHead: in_channels must be an int '
                            f'(one input map), got {in_channels!r}')
        if kwargs.get('input_transform') is not None:
            raise ValueError(
                'ERFNetDecoderHead reads one feature map: input_transform '
                f"must be None, got {kwargs['input_transform']!r}")
        if not dec_non_bottleneck_channels:
            raise ValueError('ERFNetDecoderHead: dec_non_bottleneck_channels '
                             'must not be empty')
        if len(dec_stages_non_bottleneck) != len(dec_non_bottleneck_channels):
            raise ValueError(
                'ERFNetDecoderHead: dec_stages_non_bottleneck '
                f'{dec_stages_non_bottleneck} and dec_non_bottleneck_channels'
                f' {dec_non_bottleneck_channels} must have the same length')
        if dec_upsample_channels != dec_non_bottleneck_channels:
            raise ValueError(
                'ERFNetDecoderHead: dec_upsample_channels '
                f'{dec_upsample_channels} must equal '
                f'dec_non_bottleneck_channels {dec_non_bottleneck_channels} '
                '(mmseg ERFNet upsamples to the non-bottleneck channels)')

        # The FCN part reads the decoder's output.
        super().__init__(
            num_convs=num_convs,
            kernel_size=kernel_size,
            concat_input=concat_input,
            dilation=dilation,
            in_channels=dec_non_bottleneck_channels[-1],
            channels=channels,
            **kwargs)
        #: Channels of the FCN layers' input (the decoder's output).
        self.fcn_in_channels = dec_non_bottleneck_channels[-1]
        #: Channels of the head's input (the encoder or neck output).
        self.in_channels = in_channels

        block_cfg = dict(
            conv_cfg=block_conv_cfg,
            norm_cfg=block_norm_cfg,
            act_cfg=block_act_cfg)
        # Same construction order as mmseg's ERFNet decoder.
        self.decoder = nn.ModuleList()
        prev = in_channels
        for out, num_blocks in zip(dec_non_bottleneck_channels,
                                   dec_stages_non_bottleneck):
            self.decoder.append(UpsamplerBlock(prev, out, **block_cfg))
            for _ in range(num_blocks):
                self.decoder.append(NonBottleneck1d(out, **block_cfg))
            prev = out

    def _forward_feature(self, inputs):
        """Run the decoder blocks and the FCN layers.

        Args:
            inputs (Sequence[Tensor]): Feature maps; ``inputs[in_index]`` is
                (B, in_channels, h, w).

        Returns:
            Tensor: (B, channels, h * 2**n, w * 2**n) features before the
            classifier.
        """
        x = self._transform_inputs(inputs)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                'ERFNetDecoderHead expects inputs[in_index] of shape '
                f'(B, {self.in_channels}, h, w), got {tuple(x.shape)}')
        for block in self.decoder:
            x = block(x)
        feats = self.convs(x)
        if self.concat_input:
            feats = self.conv_cat(torch.cat([x, feats], dim=1))
        return feats
