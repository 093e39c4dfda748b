"""The local memory attention op, layered as NATTEN's and mmcv's ops are.

* :mod:`.reference`: pure PyTorch semantics, the definition every kernel is
  held to;
* :mod:`.checks`: argument checks shared by every path;
* :mod:`.extension`: loading of the compiled extension ``lma_mmseg._ext``
  and the choice of its CPU kernel variant;
* :mod:`.library`: ``torch.library`` registration of the compiled ops (fake
  kernels, autograd);
* :mod:`.functional`: the entry points :func:`local_attention`,
  :func:`local_attention_unfused`, :func:`local_attention_reference`,
  :func:`local_correlation`, :func:`local_aggregation` and the references
  of the last two;
* :mod:`.flops`: analytic FLOP counts for mmengine's ``FlopAnalyzer``.

Nothing here imports from the rest of :mod:`lma_mmseg`. Without the
compiled extension this package still imports (with one warning); the
reference runs and the compiled entry points raise an ImportError naming
``lma_mmseg._ext``.
"""
from .extension import (CPU_ISA_ENV, cpu_isa, ext_available, ext_has_cuda,
                        set_cpu_isa)
from .flops import (FLOP_HANDLES, local_aggregation_flops,
                    local_attention_flops, local_correlation_flops)
from .functional import (ATTENTION_IMPLS, local_aggregation,
                         local_aggregation_reference, local_attention,
                         local_attention_reference, local_attention_unfused,
                         local_correlation, local_correlation_reference)

__all__ = [
    'local_attention', 'local_attention_reference', 'local_attention_unfused',
    'local_correlation', 'local_aggregation', 'local_correlation_reference',
    'local_aggregation_reference', 'ATTENTION_IMPLS', 'set_cpu_isa',
    'cpu_isa', 'CPU_ISA_ENV', 'ext_available', 'ext_has_cuda',
    'local_attention_flops', 'local_correlation_flops',
    'local_aggregation_flops', 'FLOP_HANDLES'
]
