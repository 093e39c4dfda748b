# Copyright (c) lma_mmseg contributors. All rights reserved.
from .cityscapes_video import CityscapesVideoDataset
from .transforms import *  # noqa: F401,F403
from .video_seg_dataset import VideoSegDataset
from .vspw import VSPW_CLASSES, VSPWDataset

__all__ = [
    'VideoSegDataset', 'CityscapesVideoDataset', 'VSPWDataset', 'VSPW_CLASSES'
]
