from .complexity import streaming_complexity
from .inference import init_model, load_checkpoint_checked
from .streaming import StreamingSegmenter, frame_pipeline

__all__ = [
    'init_model', 'load_checkpoint_checked', 'StreamingSegmenter',
    'frame_pipeline', 'streaming_complexity'
]
