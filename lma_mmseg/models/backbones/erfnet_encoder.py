"""The encoder half of mmseg's ERFNet, as a backbone of its own."""
import torch.nn as nn
from mmengine.model import BaseModule
from mmseg.models.backbones.erfnet import DownsamplerBlock, NonBottleneck1d
from mmseg.registry import MODELS


@MODELS.register_module()
class ERFNetEncoder(BaseModule):
    """Encoder of ERFNet (Romera et al., T-ITS 2018), ending at 1/8 scale.

    mmseg's :class:`mmseg.models.ERFNet` holds the encoder *and* the decoder
    in one backbone. Local Memory Attention sits between the two, so this
    class keeps only the encoder; :class:`ERFNetDecoderHead` holds the
    decoder. The blocks are mmseg's own and the module list is called
    ``encoder`` as in mmseg's ERFNet, so the ``backbone.encoder.*`` keys of
    an mmseg ERFNet checkpoint load here unchanged (see
    ``tools/convert/mmseg_erfnet_to_split.py`` for the decoder keys).

    Args:
        in_channels (int): Channels of the input image. Default: 3.
        enc_downsample_channels (Sequence[int]): Output channels of the
            downsampler blocks. Default: (16, 64, 128).
        enc_stage_non_bottlenecks (Sequence[int]): Number of non-bottleneck
            blocks after each downsampler but the first; the last stage
            cycles through ``enc_non_bottleneck_dilations``. Default: (5, 8).
        enc_non_bottleneck_dilations (Sequence[int]): Dilations of the last
            stage. Default: (2, 4, 8, 16).
        enc_non_bottleneck_channels (Sequence[int]): Channels of the
            non-bottleneck stages (must equal ``enc_downsample_channels[1:]``,
            kept for config compatibility with mmseg's ERFNet).
            Default: (64, 128).
        dropout_ratio (float): Dropout of the non-bottleneck blocks.
            Default: 0.1.
        conv_cfg (dict | None): Conv config of the blocks. Default: None.
        norm_cfg (dict): Norm config of the blocks. mmseg's ERFNet always
            builds its blocks with ``dict(type='BN', eps=1e-3)``, which is
            the default here so that its checkpoints give the same outputs.
        act_cfg (dict): Activation config of the blocks.
            Default: dict(type='ReLU').
        init_cfg (dict | list[dict], optional): Initialisation config.

    Shapes:
        input: (B, in_channels, H, W).
        output: a tuple with one tensor of shape
        (B, enc_downsample_channels[-1], ceil(H/8), ceil(W/8)).
    """

    def __init__(self,
                 in_channels=3,
                 enc_downsample_channels=(16, 64, 128),
                 enc_stage_non_bottlenecks=(5, 8),
                 enc_non_bottleneck_dilations=(2, 4, 8, 16),
                 enc_non_bottleneck_channels=(64, 128),
                 dropout_ratio=0.1,
                 conv_cfg=None,
                 norm_cfg=dict(type='BN', eps=1e-3),
                 act_cfg=dict(type='ReLU'),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        enc_downsample_channels = tuple(enc_downsample_channels)
        enc_stage_non_bottlenecks = tuple(enc_stage_non_bottlenecks)
        enc_non_bottleneck_channels = tuple(enc_non_bottleneck_channels)
        if len(enc_downsample_channels) < 2:
            raise ValueError(
                'ERFNetEncoder: enc_downsample_channels needs at least two '
                f'entries, got {enc_downsample_channels}')
        if len(enc_stage_non_bottlenecks) != len(enc_downsample_channels) - 1:
            raise ValueError(
                'ERFNetEncoder: enc_stage_non_bottlenecks must have one entry '
                'per downsampler block but the first, got '
                f'{enc_stage_non_bottlenecks} for enc_downsample_channels='
                f'{enc_downsample_channels}')
        if enc_non_bottleneck_channels != enc_downsample_channels[1:]:
            raise ValueError(
                'ERFNetEncoder: enc_non_bottleneck_channels '
                f'{enc_non_bottleneck_channels} must equal '
                f'enc_downsample_channels[1:] {enc_downsample_channels[1:]}')
        if enc_stage_non_bottlenecks[-1] % len(
                enc_non_bottleneck_dilations) != 0:
            raise ValueError(
                'ERFNetEncoder: enc_stage_non_bottlenecks[-1] '
                f'({enc_stage_non_bottlenecks[-1]}) must be a multiple of '
                'len(enc_non_bottleneck_dilations) '
                f'({len(enc_non_bottleneck_dilations)})')

        self.in_channels = in_channels
        self.out_channels = enc_downsample_channels[-1]
        block_cfg = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)

        # Same construction order as mmseg's ERFNet, so that module indices
        # (and therefore checkpoint keys) are identical.
        self.encoder = nn.ModuleList()
        self.encoder.append(
            DownsamplerBlock(in_channels, enc_downsample_channels[0],
                             **block_cfg))
        num_stages = len(enc_downsample_channels) - 1
        for i in range(num_stages):
            channels = enc_downsample_channels[i + 1]
            self.encoder.append(
                DownsamplerBlock(enc_downsample_channels[i], channels,
                                 **block_cfg))
            if i == num_stages - 1:
                repeats = (
                    enc_stage_non_bottlenecks[-1] //
                    len(enc_non_bottleneck_dilations))
                for _ in range(repeats):
                    for dilation in enc_non_bottleneck_dilations:
                        self.encoder.append(
                            NonBottleneck1d(channels, dropout_ratio, dilation,
                                            **block_cfg))
            else:
                for _ in range(enc_stage_non_bottlenecks[i]):
                    self.encoder.append(
                        NonBottleneck1d(channels, dropout_ratio,
                                        **block_cfg))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs):
        """Refuse checkpoints in mmseg's unsplit ERFNet layout.

        Loading one non-strictly would leave the decoder of
        :class:`ERFNetDecoderHead` randomly initialised with only a warning,
        so a ``{prefix}decoder.*`` key raises an error that names the
        converter instead.
        """
        decoder_keys = [
            k for k in state_dict if k.startswith(prefix + 'decoder.')
        ]
        if decoder_keys:
            raise ValueError(
                f'ERFNetEncoder: the checkpoint has {len(decoder_keys)} '
                f'decoder keys under the backbone (e.g. {decoder_keys[0]!r})'
                ": it is in mmseg's ERFNet layout. Convert it with "
                'tools/convert/mmseg_erfnet_to_split.py SRC DST and load DST.')
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def forward(self, x):
        """Encode a batch of images.

        Args:
            x (Tensor): Images of shape (B, in_channels, H, W).

        Returns:
            tuple[Tensor]: ``(feat,)`` with feat of shape
            (B, out_channels, ceil(H/8), ceil(W/8)).
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'ERFNetEncoder expects input of shape (B, {self.in_channels}'
                f', H, W), got {tuple(x.shape)}')
        for block in self.encoder:
            x = block(x)
        return (x, )
