from .complexity import count_flops, streaming_complexity
from .inference import (check_memory_offsets, init_model,
                        load_checkpoint_checked)
from .streaming import StreamingSegmenter, frame_pipeline

__all__ = [
    'check_memory_offsets', 'count_flops', 'init_model',
    'load_checkpoint_checked', 'StreamingSegmenter', 'frame_pipeline',
    'streaming_complexity'
]
