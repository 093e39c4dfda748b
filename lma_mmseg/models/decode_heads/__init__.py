from .erfnet_decoder_head import ERFNetDecoderHead

__all__ = ['ERFNetDecoderHead']
