# Copyright (c) lma_mmseg contributors. All rights reserved.
from typing import Any, Dict, List

import torch
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.registry import MODELS
from mmseg.utils import stack_batch

__all__ = ['VideoSegDataPreProcessor']


@MODELS.register_module()
class VideoSegDataPreProcessor(SegDataPreProcessor):
    """Data pre-processor for clips of frames (and single frames).

    Takes the arguments of mmseg's :class:`SegDataPreProcessor` (``mean``,
    ``std``, ``size``, ``size_divisor``, ``pad_val``, ``seg_pad_val``,
    ``bgr_to_rgb``, ``rgb_to_bgr``, ``batch_augments``, ``test_cfg``).

    - Clips: every input is a (T+1, 3, H, W) tensor (key frame last, as
      packed by ``PackClipSegInputs``). Each frame is converted BGR->RGB and
      normalised with ``mean``/``std``; all frames of a clip and its label
      are padded identically (bottom/right) to ``size`` or a multiple of
      ``size_divisor`` (``test_cfg`` in test mode, as mmseg does; with
      neither in training, to the largest clip of the batch), and the
      batch is stacked to ``inputs`` (B, T+1, 3, H, W) float32. All clips of
      a batch must have the same number of frames.
    - Single frames: every input is (3, H, W); the output is exactly that of
      mmseg's ``SegDataPreProcessor``, (B, 3, H, W).

    ``data_samples`` get ``img_shape``, ``pad_shape`` and ``padding_size``
    (training) or the padding metainfo (test) as in mmseg.
    """

    def forward(self, data: dict, training: bool = False) -> Dict[str, Any]:
        """Normalise, pad and batch ``data['inputs']``.

        Args:
            data (dict): ``inputs`` (list of (T+1, 3, H, W) or (3, H, W)
                tensors) and ``data_samples`` from the dataloader.
            training (bool): Training mode (pads labels and requires
                ``data_samples``).

        Returns:
            dict: ``inputs`` (B, T+1, 3, H, W) or (B, 3, H, W) and
            ``data_samples``.
        """
        inputs = data['inputs']
        if isinstance(inputs, torch.Tensor):
            inputs = list(inputs)
        if not inputs:
            raise ValueError(f'{self.__class__.__name__}: empty batch')
        ndims = {x.ndim for x in inputs}
        if ndims == {3}:
            return super().forward(dict(data, inputs=inputs), training)
        if ndims != {4}:
            raise ValueError(
                f'{self.__class__.__name__}: inputs must all be clips '
                '(T+1, C, H, W) or all single frames (C, H, W), got shapes '
                f'{[tuple(x.shape) for x in inputs]}')
        return self._forward_clips(dict(data, inputs=inputs), training)

    def _forward_clips(self, data: dict, training: bool) -> Dict[str, Any]:
        data = self.cast_data(data)  # type: ignore
        inputs: List[torch.Tensor] = data['inputs']
        data_samples = data.get('data_samples', None)
        lengths = {x.shape[0] for x in inputs}
        channels = {x.shape[1] for x in inputs}
        if len(lengths) > 1:
            raise ValueError(
                f'{self.__class__.__name__}: all clips of a batch must have '
                f'the same number of frames, got {sorted(lengths)}')
        if len(channels) > 1:
            raise ValueError(
                f'{self.__class__.__name__}: all frames must have the same '
                f'number of channels, got {sorted(channels)}')
        num_frames = lengths.pop()
        num_channels = channels.pop()
        if self.channel_conversion and num_channels == 3:
            inputs = [x[:, [2, 1, 0], ...] for x in inputs]
        inputs = [x.float() for x in inputs]
        if self._enable_normalize:
            inputs = [(x - self.mean) / self.std for x in inputs]
        # Pad every clip as one (T+1)*C-channel image, so all its frames
        # (and its label) get the same padding, with mmseg's stack_batch.
        flat = [x.flatten(0, 1) for x in inputs]
        if training:
            if data_samples is None:
                raise ValueError(
                    f'{self.__class__.__name__}: data_samples '
                    'are required in training mode')
            if self.size is not None and self.size_divisor is not None:
                raise ValueError(
                    f'{self.__class__.__name__}: give size or size_divisor, '
                    f'not both (got {self.size} and {self.size_divisor})')
            # Neither: pad every clip to the largest one of the batch.
            divisor = self.size_divisor if self.size is not None or \
                self.size_divisor is not None else 1
            batch, data_samples = stack_batch(
                inputs=flat,
                data_samples=data_samples,
                size=self.size,
                size_divisor=divisor,
                pad_val=self.pad_val,
                seg_pad_val=self.seg_pad_val)
            if self.batch_augments is not None:
                raise NotImplementedError(
                    f'{self.__class__.__name__}: batch_augments are not '
                    'supported for clips')
        else:
            img_size = flat[0].shape[1:]
            if any(x.shape[1:] != img_size for x in flat):
                raise ValueError(
                    f'{self.__class__.__name__}: the clips of a test batch '
                    'must have the same size, got '
                    f'{[tuple(x.shape[-2:]) for x in flat]}')
            if self.test_cfg:
                batch, padded = stack_batch(
                    inputs=flat,
                    size=self.test_cfg.get('size', None),
                    size_divisor=self.test_cfg.get('size_divisor', None),
                    pad_val=self.pad_val,
                    seg_pad_val=self.seg_pad_val)
                if data_samples is not None:
                    for data_sample, pad_info in zip(data_samples, padded):
                        data_sample.set_metainfo({**pad_info})
            else:
                batch = torch.stack(flat, dim=0)
        batch = batch.view(
            batch.shape[0], num_frames, num_channels, *batch.shape[-2:])
        return dict(inputs=batch, data_samples=data_samples)
