# Copyright (c) lma_mmseg contributors. All rights reserved.
import numpy as np
from mmcv.transforms import to_tensor
from mmseg.datasets.transforms import PackSegInputs
from mmseg.registry import TRANSFORMS


@TRANSFORMS.register_module()
class PackClipSegInputs(PackSegInputs):
    """Pack a clip and the key frame's annotation for a video segmentor.

    As mmseg's :class:`PackSegInputs` for the key frame (the data sample gets
    the key frame's metainfo and ``gt_sem_seg``), but ``inputs`` holds all
    frames of ``results['imgs']``.

    Required Keys: ``imgs`` (T+1 frames (H, W, 3), key frame last), ``img``
    (the key frame, ``imgs[-1]``); optional ``gt_seg_map`` and meta keys.

    Packed:

    - ``inputs`` (torch.Tensor): (T+1, 3, H, W), the frames' dtype (uint8
      from ``LoadClipFromFiles``), key frame last.
    - ``data_samples`` (:obj:`SegDataSample`): ``gt_sem_seg`` (1, H, W) when
      labelled, metainfo from ``meta_keys``.

    Args:
        meta_keys (Sequence[str]): Metainfo keys of the key frame to keep.
            Defaults to mmseg's plus ``clip_paths`` and ``frame_offsets``.
    """

    def __init__(
        self,
        meta_keys=(
            'img_path', 'seg_map_path', 'ori_shape', 'img_shape', 'pad_shape',
            'scale_factor', 'flip', 'flip_direction', 'reduce_zero_label',
            'clip_paths', 'frame_offsets')):
        super().__init__(meta_keys=meta_keys)

    def transform(self, results: dict) -> dict:
        imgs = results.get('imgs')
        where = results.get('img_path')
        if not imgs:
            raise KeyError(
                f'{self.__class__.__name__}: no clip frames in '
                f"results['imgs'] for {where} (use "
                'LoadClipFromFiles)')
        if results.get('img') is not imgs[-1]:
            raise RuntimeError(
                f'{self.__class__.__name__}: the key frame of {where} was '
                'changed by a transform that did not see the other frames; '
                'wrap clip transforms in ClipTransformBroadcaster')
        shapes = {img.shape for img in imgs}
        if len(shapes) > 1:
            raise ValueError(
                f'{self.__class__.__name__}: the frames of '
                f'{where} have different shapes {shapes}')
        packed = super().transform(results)
        # Stack in numpy: torch.stack of small tensors can be slowed down by
        # intra-op threads in busy dataloader workers.
        clip = np.stack(
            [img if img.ndim == 3 else img[..., None] for img in imgs])
        packed['inputs'] = to_tensor(
            np.ascontiguousarray(clip.transpose(0, 3, 1, 2)))
        return packed
