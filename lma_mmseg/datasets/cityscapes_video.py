# Copyright (c) lma_mmseg contributors. All rights reserved.
import re

from mmseg.datasets import CityscapesDataset
from mmseg.registry import DATASETS

from .video_seg_dataset import VideoSegDataset


@DATASETS.register_module()
class CityscapesVideoDataset(VideoSegDataset):
    """Cityscapes video: annotated frames with their preceding frames.

    Layout (as distributed by Cityscapes, ``leftImg8bit_sequence`` holds the
    30 frames of every snippet, the 20th is annotated)::

        leftImg8bit_sequence/{split}/{city}/{name}_leftImg8bit.png
        leftImg8bit/{split}/{city}/{name}_leftImg8bit.png
        gtFine/{split}/{city}/{name}_gtFine_labelTrainIds.png

    with ``name = {city}_{seq}_{frame}`` (six digits each).

    Example::

        dict(type='CityscapesVideoDataset',
             data_root='data/cityscapes',
             data_prefix=dict(img_path='leftImg8bit_sequence/train',
                              seg_map_path='gtFine/train'),
             frame_offsets=(-3, -2, -1),
             missing_frames='error',
             pipeline=[...])

    Classes and palette are those of mmseg's :class:`CityscapesDataset`
    (19 training classes, labels in trainIds, 255 ignored, no
    ``reduce_zero_label``), so mmseg's ``CityscapesMetric`` and ``IoUMetric``
    work unchanged on ``img_path`` (the key frame). When ``key_img_path`` is
    not given, it is derived from ``img_path`` by replacing
    ``leftImg8bit_sequence`` with ``leftImg8bit``: key frames missing from the
    sequence folder are taken from there, and without labels
    (``seg_map_path=''``, e.g. the test split) the samples are its images.

    Args:
        img_suffix (str): Defaults to ``'_leftImg8bit.png'``.
        seg_map_suffix (str): Defaults to ``'_gtFine_labelTrainIds.png'``.
        **kwargs: Arguments of :class:`VideoSegDataset` (``frame_offsets``,
            ``missing_frames``, ``train_offsets_sampler``, ``data_prefix``,
            ...) and of mmseg's ``BaseSegDataset``.
    """
    METAINFO = CityscapesDataset.METAINFO

    def __init__(
            self,
            img_suffix: str = '_leftImg8bit.png',
            seg_map_suffix: str = '_gtFine_labelTrainIds.png',
            data_prefix: dict = dict(
                img_path='leftImg8bit_sequence/train',
                seg_map_path='gtFine/train'),
            frame_pattern: str = r'^.+_\d+_(?P<frame>\d+)$',
            **kwargs) -> None:
        data_prefix = dict(data_prefix)
        img_path = data_prefix.get('img_path') or ''
        if not data_prefix.get('key_img_path') and \
                'leftImg8bit_sequence' in img_path:
            data_prefix['key_img_path'] = re.sub(
                r'leftImg8bit_sequence', 'leftImg8bit', img_path)
        super().__init__(
            img_suffix=img_suffix,
            seg_map_suffix=seg_map_suffix,
            data_prefix=data_prefix,
            frame_pattern=frame_pattern,
            **kwargs)
