# Copyright (c) lma_mmseg contributors. All rights reserved.
from .clip_broadcaster import ClipTransformBroadcaster
from .formatting import PackClipSegInputs
from .loading import LoadClipAnnotations, LoadClipFromFiles

__all__ = [
    'ClipTransformBroadcaster', 'LoadClipAnnotations', 'LoadClipFromFiles',
    'PackClipSegInputs'
]
