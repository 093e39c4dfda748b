# Copyright (c) lma_mmseg contributors. All rights reserved.
import os
import os.path as osp
from typing import List

import numpy as np
from mmengine import fileio
from mmseg.registry import DATASETS

from .video_seg_dataset import VideoSegDataset

#: The 124 evaluated VSPW classes, in the order of the mask values 1..124
#: (mask value 0 is "others" and 255 is void; both are not evaluated).
VSPW_CLASSES = (
    'wall', 'ceiling', 'door', 'stair', 'ladder', 'escalator',
    'Playground_slide', 'handrail_or_fence', 'window', 'rail', 'goal',
    'pillar', 'pole', 'floor', 'ground', 'grass', 'sand', 'athletic_field',
    'road', 'path', 'crosswalk', 'building', 'house', 'bridge', 'tower',
    'windmill', 'well_or_well_lid', 'other_construction', 'sky', 'mountain',
    'stone', 'wood', 'ice', 'snowfield', 'grandstand', 'sea', 'river', 'lake',
    'waterfall', 'water', 'billboard_or_Bulletin_Board', 'sculpture',
    'pipeline', 'flag', 'parasol_or_umbrella', 'cushion_or_carpet', 'tent',
    'roadblock', 'car', 'bus', 'truck', 'bicycle', 'motorcycle',
    'wheeled_machine', 'ship_or_boat', 'raft', 'airplane', 'tyre',
    'traffic_light', 'lamp', 'person', 'cat', 'dog', 'horse', 'cattle',
    'other_animal', 'tree', 'flower', 'other_plant', 'toy', 'ball_net',
    'backboard', 'skateboard', 'bat', 'ball',
    'cupboard_or_showcase_or_storage_rack', 'box',
    'traveling_case_or_trolley_case', 'basket', 'bag_or_package',
    'trash_can', 'cage', 'plate', 'tub_or_bowl_or_pot', 'bottle_or_cup',
    'barrel', 'fishbowl', 'bed', 'pillow', 'table_or_desk', 'chair_or_seat',
    'bench', 'sofa', 'shelf', 'bathtub', 'gun', 'commode', 'roaster',
    'other_machine', 'refrigerator', 'washing_machine', 'Microwave_oven',
    'fan', 'curtain', 'textiles', 'clothes', 'painting_or_poster', 'mirror',
    'flower_pot_or_vase', 'clock', 'book', 'tool', 'blackboard', 'tissue',
    'screen_or_television', 'computer', 'printer', 'Mobile_phone',
    'keyboard', 'other_electronic_product', 'fruit', 'food', 'instrument',
    'train')


def _palette(num: int) -> List[List[int]]:
    """A fixed, well-spread colour per class (seeded, reproducible)."""
    rng = np.random.RandomState(124)
    return rng.randint(0, 256, size=(num, 3)).tolist()


@DATASETS.register_module()
class VSPWDataset(VideoSegDataset):
    """VSPW (Video Scene Parsing in the Wild), ``VSPW_480p`` layout.

    ::

        {data_root}/train.txt, val.txt, test.txt     one video name per line
        {data_root}/data/{video}/origin/{frame}.jpg  every frame
        {data_root}/data/{video}/mask/{frame}.png    its label (train, val)

    One sample per labelled frame of the videos listed in ``ann_file``
    (every ``key_frame_stride``-th labelled frame of each video, starting with
    its first), with memory frames at ``frame_offsets`` in the same video
    (e.g. CFFM's ``(-9, -6, -3)``). Near the start of a video the offsets
    reach before the first frame; use ``missing_frames='nearest'`` there (the
    VSPW configs do), which takes the nearest existing frame.

    Labels: mask values 1..124 are the 124 classes of :data:`VSPW_CLASSES`,
    0 ("others") and 255 (void) are not evaluated. With the default
    ``reduce_zero_label=True`` the loaded labels are ``value - 1`` and both 0
    and 255 become 255 (the ``ignore_index``), which is the mapping of the
    VSPW toolkit's evaluation (``map_category_id``) and of the mmseg-based
    VSPW code (CFFM, MRCFA: ``LoadAnnotations(reduce_zero_label=True)``,
    124 classes).

    Without labels (``data_prefix['seg_map_path']=''``, e.g. the test split)
    the samples are the frames of ``origin/``.

    Example::

        dict(type='VSPWDataset', data_root='data/VSPW_480p',
             ann_file='val.txt',
             data_prefix=dict(img_path='data', seg_map_path='data'),
             frame_offsets=(-9, -6, -3), missing_frames='nearest',
             pipeline=[...])

    Args:
        ann_file (str): The split file listing the videos, relative to
            ``data_root`` (``'train.txt'``, ``'val.txt'`` or ``'test.txt'``).
        key_frame_stride (int): Use every ``key_frame_stride``-th labelled
            frame of a video as a key frame. Defaults to 1 (all).
        img_subdir (str): Folder of the frames inside a video folder.
            Defaults to ``'origin'``.
        seg_subdir (str): Folder of the labels inside a video folder.
            Defaults to ``'mask'``.
        img_suffix (str): Defaults to ``'.jpg'``.
        seg_map_suffix (str): Defaults to ``'.png'``.
        reduce_zero_label (bool): Defaults to True (see above).
        **kwargs: Arguments of :class:`VideoSegDataset` (``frame_offsets``,
            ``missing_frames``, ``train_offsets_sampler``, ...) and of
            mmseg's ``BaseSegDataset``.
    """
    METAINFO = dict(classes=VSPW_CLASSES, palette=_palette(len(VSPW_CLASSES)))

    def __init__(self,
                 ann_file: str = 'val.txt',
                 key_frame_stride: int = 1,
                 img_subdir: str = 'origin',
                 seg_subdir: str = 'mask',
                 img_suffix: str = '.jpg',
                 seg_map_suffix: str = '.png',
                 reduce_zero_label: bool = True,
                 data_prefix: dict = dict(
                     img_path='data', seg_map_path='data'),
                 frame_pattern: str = r'^(?P<frame>\d+)$',
                 **kwargs) -> None:
        if isinstance(key_frame_stride, bool) or not isinstance(
                key_frame_stride, int) or key_frame_stride < 1:
            raise ValueError(
                f'VSPWDataset: key_frame_stride must be an int >= 1, got '
                f'{key_frame_stride!r}')
        if not ann_file:
            raise ValueError(
                'VSPWDataset: ann_file must name the split file listing the '
                "videos, e.g. 'val.txt'")
        self.key_frame_stride = key_frame_stride
        self.img_subdir = img_subdir
        self.seg_subdir = seg_subdir
        super().__init__(
            ann_file=ann_file,
            img_suffix=img_suffix,
            seg_map_suffix=seg_map_suffix,
            reduce_zero_label=reduce_zero_label,
            data_prefix=data_prefix,
            frame_pattern=frame_pattern,
            **kwargs)

    def videos(self) -> List[str]:
        """The video names listed in ``ann_file``."""
        if not osp.isfile(self.ann_file):
            raise FileNotFoundError(
                f'VSPWDataset: split file {self.ann_file} does not exist '
                '(ann_file is relative to data_root, e.g. val.txt)')
        lines = fileio.list_from_file(
            self.ann_file, backend_args=self.backend_args)
        return [line.strip() for line in lines if line.strip()]

    def _key_stems(self) -> List[str]:
        """``{video}/{img_subdir}/{frame}`` of every key frame."""
        labelled = 'seg_map_path' in self._given_prefixes
        root = self.data_prefix['seg_map_path'] if labelled else \
            self.data_prefix['img_path']
        sub = self.seg_subdir if labelled else self.img_subdir
        suffix = self.seg_map_suffix if labelled else self.img_suffix
        stems = []
        for video in self.videos():
            folder = osp.join(root, video, sub)
            if not osp.isdir(folder):
                raise FileNotFoundError(
                    f'VSPWDataset: video {video!r} of {self.ann_file} has no '
                    f'folder {folder}')
            frames = sorted(
                name[:-len(suffix)] for name in os.listdir(folder)
                if name.endswith(suffix) and not name.startswith('.'))
            for frame in frames[::self.key_frame_stride]:
                stems.append(f'{video}/{self.img_subdir}/{frame}')
        return stems

    def _seg_map_path(self, ann_dir: str, stem: str) -> str:
        video, _, frame = stem.split('/')
        return osp.join(ann_dir, video, self.seg_subdir,
                        frame + self.seg_map_suffix)

    def _no_samples_message(self) -> str:
        labelled = 'seg_map_path' in self._given_prefixes
        root = self.data_prefix['seg_map_path'] if labelled else \
            self.data_prefix['img_path']
        sub = self.seg_subdir if labelled else self.img_subdir
        suffix = self.seg_map_suffix if labelled else self.img_suffix
        return (f'VSPWDataset: found no annotated frame: the videos listed '
                f'in {self.ann_file} have no *{suffix} file in '
                f'{osp.join(root, "{video}", sub)}. Check data_root, '
                'data_prefix and the suffixes (see "Data preparation" in the '
                'README).')
