from .video_encoder_decoder import (StreamMemory, VideoEncoderDecoder,
                                    is_memory_model, parse_memory_offsets)

__all__ = [
    'StreamMemory', 'VideoEncoderDecoder', 'is_memory_model',
    'parse_memory_offsets'
]
