"""The compiled local memory attention op and its pure PyTorch reference."""
from .flops import (FLOP_HANDLES, local_aggregation_flops,
                    local_attention_flops, local_correlation_flops)
from .local_attention import (CPU_ISA_ENV, cpu_isa, local_aggregation,
                              local_aggregation_reference, local_attention,
                              local_attention_reference,
                              local_attention_unfused, local_correlation,
                              local_correlation_reference, set_cpu_isa)

__all__ = [
    'local_attention', 'local_attention_reference', 'local_attention_unfused',
    'local_correlation', 'local_aggregation', 'local_correlation_reference',
    'local_aggregation_reference', 'set_cpu_isa', 'cpu_isa', 'CPU_ISA_ENV',
    'local_attention_flops', 'local_correlation_flops',
    'local_aggregation_flops', 'FLOP_HANDLES'
]
