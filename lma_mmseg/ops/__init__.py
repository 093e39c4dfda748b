"""The compiled local memory attention op and its pure PyTorch reference."""
from .local_attention import (local_aggregation, local_aggregation_reference,
                              local_attention, local_attention_reference,
                              local_correlation, local_correlation_reference)

__all__ = [
    'local_attention', 'local_attention_reference', 'local_correlation',
    'local_aggregation', 'local_correlation_reference',
    'local_aggregation_reference'
]
