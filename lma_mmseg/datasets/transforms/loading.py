# Copyright (c) lma_mmseg contributors. All rights reserved.
from typing import Optional

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmengine import fileio
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import TRANSFORMS


def _decode(
        path: str, flag: str, backend: str, backend_args: Optional[dict],
        what: str) -> np.ndarray:
    """Read and decode one image file; raise an error naming the file when it
    is missing, unreadable or not a decodable image."""
    try:
        data = fileio.get(path, backend_args=backend_args)
    except FileNotFoundError:
        raise FileNotFoundError(f'{what} {path} does not exist') from None
    try:
        img = mmcv.imfrombytes(
            data, flag=flag, backend=backend) if data else None
    except Exception as exc:  # e.g. PIL.UnidentifiedImageError
        raise OSError(
            f'{what} {path} is corrupt or not an image file: '
            f'{exc}') from exc
    if img is None:
        raise OSError(
            f'{what} {path} is corrupt or not an image file '
            f'({len(data) if data else 0} bytes could not be '
            f'decoded by {backend})')
    return img


@TRANSFORMS.register_module()
class LoadClipAnnotations(LoadAnnotations):
    """Load the key frame's semantic label and check its values.

    As mmseg's :class:`LoadAnnotations` (``reduce_zero_label`` and
    ``label_map`` of the data info are applied the same way), but a missing
    or corrupt file, a label with more than one channel and values outside
    ``[0, num_classes)`` other than ``ignore_index`` raise errors that name
    the file. ``num_classes`` is taken from the argument or else from the
    data info (set by :class:`VideoSegDataset`); without either the range is
    not checked.

    Required Keys: ``seg_map_path`` (nothing is loaded when it is ``None``,
    e.g. on an unlabelled test split); optional ``num_classes``,
    ``reduce_zero_label``, ``label_map``.

    Added Keys: ``gt_seg_map`` (H, W) uint8; ``seg_fields`` gets
    ``'gt_seg_map'``.

    Args:
        num_classes (int, optional): Number of classes. Defaults to None.
        ignore_index (int): The label value ignored by the loss and metrics.
            Defaults to 255.
        imdecode_backend (str): mmcv image decoding backend. Defaults to
            ``'pillow'`` as mmseg's ``LoadAnnotations``.
        backend_args (dict, optional): File backend arguments.
    """

    def __init__(
            self,
            num_classes: Optional[int] = None,
            ignore_index: int = 255,
            imdecode_backend: str = 'pillow',
            backend_args: Optional[dict] = None) -> None:
        super().__init__(
            reduce_zero_label=None,
            backend_args=backend_args,
            imdecode_backend=imdecode_backend)
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def transform(self, results: dict) -> dict:
        """Load the label; do nothing when the data info has no
        ``seg_map_path`` (``None``, an unlabelled split)."""
        if results.get('seg_map_path') is None:
            return results
        self._load_seg_map(results)
        return results

    def _load_seg_map(self, results: dict) -> None:
        path = results['seg_map_path']
        seg = _decode(
            path, 'unchanged', self.imdecode_backend, self.backend_args,
            'label file')
        if seg.ndim == 3 and seg.shape[2] == 1:
            seg = seg[..., 0]
        if seg.ndim != 2:
            raise ValueError(
                f'label file {path} must have one channel, got '
                f'an image of shape {seg.shape}')
        if seg.dtype != np.uint8:
            if seg.min() < 0 or seg.max() > 255:
                raise ValueError(
                    f'label file {path} has values outside [0, 255] '
                    f'(min {seg.min()}, max {seg.max()})')
            seg = seg.astype(np.uint8)
        if results.get('reduce_zero_label', False):
            seg = seg.copy()
            seg[seg == 0] = 255
            seg = seg - 1
            seg[seg == 254] = 255
        if results.get('label_map', None):
            copy = seg.copy()
            for old_id, new_id in results['label_map'].items():
                seg[copy == old_id] = new_id
        num_classes = self.num_classes or results.get('num_classes')
        if num_classes:
            values = np.unique(seg)
            bad = values[(values >= num_classes)
                         & (values != self.ignore_index)]
            if bad.size:
                raise ValueError(
                    f'label file {path} has values {bad.tolist()} outside '
                    f'the class range [0, {num_classes}) (ignore index '
                    f'{self.ignore_index}); are these labelIds instead of '
                    'labelTrainIds?')
        results['gt_seg_map'] = seg
        results.setdefault('seg_fields', [])
        if 'gt_seg_map' not in results['seg_fields']:
            results['seg_fields'].append('gt_seg_map')

    def __repr__(self) -> str:
        return (
            f'{self.__class__.__name__}(num_classes={self.num_classes}, '
            f'ignore_index={self.ignore_index}, '
            f"imdecode_backend='{self.imdecode_backend}')")


@TRANSFORMS.register_module()
class LoadClipFromFiles(BaseTransform):
    """Load every frame of a clip and, optionally, the key frame's label.

    Required Keys: ``clip_paths`` (memory frames oldest first, then the key
    frame), ``img_path``; ``seg_map_path`` when ``with_label``.

    Added Keys:

    - ``imgs`` (list[np.ndarray]): T+1 images (H, W, 3) uint8 BGR, key
      frame last.
    - ``img`` (np.ndarray): the key frame (the same array as ``imgs[-1]``),
      so single-frame transforms and metainfo keep working.
    - ``img_shape``, ``ori_shape`` (tuple): (H, W) of the frames.
    - ``gt_seg_map`` and ``seg_fields`` through :class:`LoadClipAnnotations`
      when ``with_label`` and the data info has a ``seg_map_path``.

    All frames must have the same size; otherwise an error names the files
    and their sizes. A missing or corrupt frame raises an error naming it.

    Args:
        with_label (bool): Load the key frame's label too. Set False in test
            pipelines that load labels after resizing (mmseg's way), then add
            ``LoadClipAnnotations`` there. Defaults to True.
        num_classes (int, optional): For the label check, see
            :class:`LoadClipAnnotations`.
        ignore_index (int): Defaults to 255.
        to_float32 (bool): Convert frames to float32. Defaults to False.
        color_type (str): mmcv ``imfrombytes`` flag. Defaults to 'color'.
        imdecode_backend (str): Defaults to 'cv2'.
        backend_args (dict, optional): File backend arguments.
    """

    def __init__(
            self,
            with_label: bool = True,
            num_classes: Optional[int] = None,
            ignore_index: int = 255,
            to_float32: bool = False,
            color_type: str = 'color',
            imdecode_backend: str = 'cv2',
            backend_args: Optional[dict] = None) -> None:
        self.with_label = with_label
        self.to_float32 = to_float32
        self.color_type = color_type
        self.imdecode_backend = imdecode_backend
        self.backend_args = backend_args.copy() if backend_args else None
        self.label_loader = LoadClipAnnotations(
            num_classes=num_classes,
            ignore_index=ignore_index,
            backend_args=backend_args) if with_label else None

    def transform(self, results: dict) -> dict:
        paths = results.get('clip_paths')
        if not paths:
            raise KeyError(
                f'{self.__class__.__name__}: the data info of '
                f"{results.get('img_path')} has no clip_paths (is the "
                'dataset a VideoSegDataset?)')
        imgs = []
        for path in paths:
            img = _decode(
                path, self.color_type, self.imdecode_backend,
                self.backend_args, 'frame')
            if self.to_float32:
                img = img.astype(np.float32)
            imgs.append(img)
        shapes = {img.shape for img in imgs}
        if len(shapes) > 1:
            sizes = ', '.join(
                f'{p}: {img.shape[1]}x{img.shape[0]}'
                for p, img in zip(paths, imgs))
            raise ValueError(
                'the frames of a clip must all have the same size, got '
                f'{sizes} (width x height)')
        results['imgs'] = imgs
        results['img'] = imgs[-1]
        results['img_shape'] = imgs[-1].shape[:2]
        results['ori_shape'] = imgs[-1].shape[:2]
        if self.label_loader is not None and \
                results.get('seg_map_path') is not None:
            results = self.label_loader(results)
            seg_shape = results['gt_seg_map'].shape
            if seg_shape != imgs[-1].shape[:2]:
                raise ValueError(
                    f"label file {results['seg_map_path']} has size "
                    f'{seg_shape[1]}x{seg_shape[0]} but the key frame '
                    f'{paths[-1]} has size {imgs[-1].shape[1]}x'
                    f'{imgs[-1].shape[0]} (width x height)')
        return results

    def __repr__(self) -> str:
        return (
            f'{self.__class__.__name__}(with_label={self.with_label}, '
            f'to_float32={self.to_float32}, '
            f"color_type='{self.color_type}', "
            f"imdecode_backend='{self.imdecode_backend}')")
