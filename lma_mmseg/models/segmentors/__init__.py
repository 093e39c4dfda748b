from .video_encoder_decoder import VideoEncoderDecoder, is_memory_model

__all__ = ['VideoEncoderDecoder', 'is_memory_model']
