from .erfnet_encoder import ERFNetEncoder

__all__ = ['ERFNetEncoder']
