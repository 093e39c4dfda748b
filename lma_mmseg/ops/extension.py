"""The compiled extension ``lma_mmseg._ext`` and its CPU kernel variant.

Importing ``lma_mmseg._ext`` registers the compiled ops ``torch.ops.lma.*``
(schemas and CPU kernels, CUDA kernels when the extension was built with
``FORCE_CUDA=1`` or on a CUDA machine). It is imported once, here, and not
inside the entry points, so that ``torch.compile`` traces no import.

A machine that could not build the extension can still import
:mod:`lma_mmseg`: the import warns once, :func:`ext_available` is False,
the compiled entry points raise an ImportError that names the extension and
how to build it, and the pure PyTorch reference runs as usual
(``LocalMemoryNeck`` falls back to it).
"""
import os
import warnings
from types import ModuleType

__all__ = [
    'CPU_ISA_ENV', 'ext_available', 'ext_has_cuda', 'load_ext', 'set_cpu_isa',
    'cpu_isa'
]

#: environment variable read when this module is imported: the CPU kernel
#: variant, ``auto`` (default), ``avx2`` or ``baseline``
CPU_ISA_ENV = 'LMA_MMSEG_CPU_ISA'

_BUILD_HINT = ('Build it with `python setup.py build_ext --inplace` (add '
               'FORCE_CUDA=1 for the CUDA kernels) or `pip install -e .` in '
               'the repository root.')

try:
    from lma_mmseg import _ext
    _EXT_ERROR = None
except ImportError as _e:  # the kernels are not built
    _ext = None
    _EXT_ERROR = _e
    warnings.warn(
        'lma_mmseg._ext (the compiled local attention kernels) cannot be '
        'imported; local_attention, local_attention_unfused, '
        'local_correlation and local_aggregation will raise, and '
        "LocalMemoryNeck runs attn_impl='reference' (pure PyTorch). "
        f'{_BUILD_HINT} Original error: {_e}')

_WITH_CUDA = _ext is not None and bool(_ext.with_cuda())


def ext_available() -> bool:
    """Whether the compiled extension ``lma_mmseg._ext`` is importable."""
    return _ext is not None


def ext_has_cuda() -> bool:
    """Whether ``lma_mmseg._ext`` is importable and has CUDA kernels."""
    return _WITH_CUDA


def load_ext() -> ModuleType:
    """The compiled extension ``lma_mmseg._ext``.

    Raises:
        ImportError: The extension is not built; the message says how to
            build it.
    """
    if _ext is None:
        raise ImportError(
            'lma_mmseg._ext (the compiled local attention kernels) is not '
            f'built. {_BUILD_HINT} Original error: {_EXT_ERROR}'
        ) from _EXT_ERROR
    return _ext


def set_cpu_isa(isa: str) -> None:
    """Choose the variant of the CPU kernels for the calls that follow.

    The CPU kernels are compiled twice, for AVX2+FMA and for the baseline
    x86-64 ISA. The environment variable ``LMA_MMSEG_CPU_ISA`` sets the
    choice when :mod:`lma_mmseg.ops` is imported; this function changes it
    afterwards.

    Args:
        isa (str): ``'auto'`` (AVX2+FMA where the CPU has both, else the
            baseline), ``'avx2'`` (fails on a CPU without AVX2/FMA) or
            ``'baseline'``.
    """
    if isa not in ('auto', 'avx2', 'baseline'):
        raise ValueError("the CPU kernel variant must be 'auto', 'avx2' or "
                         f"'baseline', got {isa!r}")
    try:
        load_ext().set_cpu_isa(isa)
    except RuntimeError as e:
        raise ValueError(str(e).splitlines()[0]) from e


def cpu_isa() -> str:
    """The active CPU kernel variant: ``'avx2'`` or ``'baseline'``."""
    return load_ext().cpu_isa()


if _ext is not None and os.environ.get(CPU_ISA_ENV):
    try:
        set_cpu_isa(os.environ[CPU_ISA_ENV])
    except ValueError as _e:
        raise ValueError(f'environment variable {CPU_ISA_ENV}: {_e}') from _e
