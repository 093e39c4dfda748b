# Copyright (c) lma_mmseg contributors. All rights reserved.
from .clip_broadcaster import ClipTransformBroadcaster
from .formatting import PackClipSegInputs
from .load_checked_annotations import LoadCheckedAnnotations
from .loading import LoadClipAnnotations, LoadClipFromFiles
from .random_translate import RandomTranslate
from .reset_ori_shape import ResetOriShape

__all__ = [
    'ClipTransformBroadcaster', 'LoadCheckedAnnotations',
    'LoadClipAnnotations', 'LoadClipFromFiles', 'PackClipSegInputs',
    'RandomTranslate', 'ResetOriShape'
]
