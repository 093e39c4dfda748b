# Copyright (c) lma_mmseg contributors. All rights reserved.
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS


@TRANSFORMS.register_module()
class ResetOriShape(BaseTransform):
    """Make the current image size the sample's original size.

    mmseg segmentors resize their predictions to ``ori_shape``, the size of
    the image as loaded, and metrics compare them with ``gt_seg_map``. After
    this transform ``ori_shape`` is ``img_shape``, so a model that works on
    frames resized to, e.g., 1024x512 predicts and is evaluated at 1024x512,
    against labels resized with the image (nearest neighbour, by mmcv's
    ``Resize``), as in the Local Memory Attention authors' evaluation.

    Required Keys: ``img_shape``; optional maps in ``seg_fields``.

    Modified Keys: ``ori_shape``.

    Raises:
        ValueError: When a map in ``seg_fields`` does not have the image's
            size (it was not resized with the image).
    """

    def transform(self, results: dict) -> dict:
        shape = tuple(results['img_shape'][:2])
        for key in results.get('seg_fields', []):
            if tuple(results[key].shape[:2]) != shape:
                raise ValueError(
                    f'{type(self).__name__}: {key} of '
                    f'{results.get("seg_map_path")} has size '
                    f'{tuple(results[key].shape[:2])}, the image '
                    f'{shape}; load the labels before resizing')
        results['ori_shape'] = shape
        return results
