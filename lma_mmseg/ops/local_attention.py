"""Local memory attention: Python API, autograd Functions and reference.

For every query pixel ``(y, x)`` of the current frame the op looks at a
``window x window`` neighbourhood centred on the same position in each of the
``T`` memory frames. Window slot ``s = i * window + j`` (``i, j`` in
``[0, window)``) has the offset::

    dy = (i - window // 2) * dilation,  dx = (j - window // 2) * dilation

and the correlation is::

    corr[b, t, s, y, x] = sum_c q[b, c, y, x] * k[b, t, c, y + dy, x + dx]

(0 where ``(y + dy, x + dx)`` is outside the map). :func:`local_attention`
takes ``logits = scale * corr``, runs ONE softmax per query pixel jointly over
all ``T * window * window`` slots and returns the attention-weighted sum of the
memory values at the same offsets. With ``padding='zeros'`` (Paul et al.,
IROS 2021) an outside position takes part in the softmax with logit 0 and
value 0; with ``padding='mask'`` it is excluded from the softmax.

The layers follow NATTEN's and mmcv's: :func:`local_attention_reference` is a
plain PyTorch implementation that defines the semantics; the compiled kernels
of ``lma_mmseg._ext`` (CPU, and CUDA when the extension was built with
``FORCE_CUDA=1`` or on a CUDA machine) are registered with ``torch.library``
as ``torch.ops.lma.local_attention_forward``/``_backward``,
``torch.ops.lma.local_correlation_forward``/``_backward`` and
``torch.ops.lma.local_aggregation_forward``/``_backward``, with fake kernels
and autograd formulas registered here, so that they work under
``torch.compile`` and ``torch.export``; :func:`local_attention`,
:func:`local_correlation`, :func:`local_aggregation` (and
:func:`local_attention_unfused`, the three-step baseline) are the entry
points, which check their arguments before calling the ops. The fused
:func:`local_attention` never materialises the ``(B, T * window**2, H, W)``
attention in forward; it keeps one log-sum-exp per query pixel for backward.
"""
import math
import numbers
import os
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    'local_attention', 'local_attention_reference', 'local_attention_unfused',
    'local_correlation', 'local_aggregation', 'local_correlation_reference',
    'local_aggregation_reference', 'set_cpu_isa', 'cpu_isa'
]

_PADDINGS = ('zeros', 'mask')
_CPU_DTYPES = (torch.float32, torch.float64)
_CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_AUTOCAST_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: environment variable read when this module is imported: the CPU kernel
#: variant, ``auto`` (default), ``avx2`` or ``baseline``
CPU_ISA_ENV = 'LMA_MMSEG_CPU_ISA'

# Importing the extension registers the ops torch.ops.lma.*; it is done once
# here (not inside the entry points) so that torch.compile traces no import.
try:
    from lma_mmseg import _ext
    _EXT_ERROR = None
    _WITH_CUDA = bool(_ext.with_cuda())
except ImportError as _e:  # the kernels are not built
    _ext = None
    _EXT_ERROR = _e
    _WITH_CUDA = False


def _load_ext():
    """The compiled extension, or an ImportError that says how to build it."""
    if _ext is None:
        raise ImportError(
            'lma_mmseg._ext (the compiled local attention kernels) is not '
            'built. Build it with `python setup.py build_ext --inplace` '
            '(add FORCE_CUDA=1 for the CUDA kernels) or `pip install -e '
            f'.` in the repository root. Original error: {_EXT_ERROR}'
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
        _load_ext().set_cpu_isa(isa)
    except RuntimeError as e:
        raise ValueError(str(e).splitlines()[0]) from e


def cpu_isa() -> str:
    """The active CPU kernel variant: ``'avx2'`` or ``'baseline'``."""
    return _load_ext().cpu_isa()


if _ext is not None and os.environ.get(CPU_ISA_ENV):
    try:
        set_cpu_isa(os.environ[CPU_ISA_ENV])
    except ValueError as _e:
        raise ValueError(f'environment variable {CPU_ISA_ENV}: {_e}') from _e


# --------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------
def _shape(t: torch.Tensor) -> str:
    return 'x'.join(str(s) for s in t.shape) if t.dim() else '()'


def _describe(**tensors) -> str:
    return ', '.join(f'{name} {tuple(t.shape)} {t.dtype} on {t.device}'
                     for name, t in tensors.items())


def _check_window(window, dilation) -> Tuple[int, int]:
    if isinstance(window, bool) or not isinstance(window, numbers.Integral):
        raise ValueError(
            f'window must be an odd int >= 1, got {window!r} '
            f'({type(window).__name__})')
    if window < 1 or window % 2 == 0:
        raise ValueError(f'window must be an odd int >= 1, got {window}')
    if (isinstance(dilation, bool)
            or not isinstance(dilation, numbers.Integral)):
        raise ValueError(f'dilation must be an int >= 1, got {dilation!r} '
                         f'({type(dilation).__name__})')
    if dilation < 1:
        raise ValueError(f'dilation must be an int >= 1, got {dilation}')
    return int(window), int(dilation)


def _check_tensors(names_dims, **tensors):
    """Check types, ranks, positive sizes, one device and one dtype."""
    for name, dim in names_dims:
        t = tensors[name]
        if not isinstance(t, torch.Tensor):
            raise ValueError(
                f'{name} must be a torch.Tensor, got {type(t).__name__}')
        if t.dim() != dim:
            raise ValueError(
                f'{name} must be a {dim}-D tensor, got shape '
                f'{tuple(t.shape)} ({_describe(**tensors)})')
        if not t.is_floating_point():
            raise ValueError(f'{name} must be a floating point tensor, got '
                             f'{t.dtype} ({_describe(**tensors)})')
        if t.numel() == 0:
            raise ValueError(f'every size of {name} must be positive, got '
                             f'shape {tuple(t.shape)} '
                             f'({_describe(**tensors)})')
    first = names_dims[0][0]
    for name, _ in names_dims[1:]:
        if tensors[name].device != tensors[first].device:
            raise ValueError(
                f'{first} and {name} must be on the same device: '
                f'{_describe(**tensors)}')
        if tensors[name].dtype != tensors[first].dtype:
            raise ValueError(f'{first} and {name} must have the same dtype: '
                             f'{_describe(**tensors)}')


def _check_qkv(q, k, v=None):
    """Check q (B, C, H, W), k (B, T, C, H, W) and v (B, T, Cv, H, W)."""
    tensors = dict(q=q, k=k) if v is None else dict(q=q, k=k, v=v)
    dims = [('q', 4), ('k', 5)] + ([] if v is None else [('v', 5)])
    if isinstance(k, torch.Tensor) and k.dim() == 5 and k.shape[1] == 0:
        raise ValueError('the number of memory frames T (dim 1 of k) must '
                         f'be >= 1, got {_describe(**tensors)}')
    _check_tensors(dims, **tensors)
    B, C, H, W = q.shape
    if (k.shape[0] != B or k.shape[2] != C or tuple(k.shape[3:]) != (H, W)):
        raise ValueError(
            'k must have shape (B, T, C, H, W) = (%d, T, %d, %d, %d) to '
            'match q (B, C, H, W), got q %s and k %s' %
            (B, C, H, W, tuple(q.shape), tuple(k.shape)))
    if v is not None and (tuple(v.shape[:2]) != tuple(k.shape[:2])
                          or tuple(v.shape[3:]) != (H, W)):
        raise ValueError(
            'v must have shape (B, T, Cv, H, W) = (%d, %d, Cv, %d, %d) to '
            'match q %s and k %s, got v %s' %
            (B, k.shape[1], H, W, tuple(q.shape), tuple(k.shape),
             tuple(v.shape)))


def _check_attn_v(attn, v, window):
    """Check attn (B, T, window**2, H, W) against v (B, T, Cv, H, W)."""
    if (isinstance(attn, torch.Tensor) and attn.dim() == 5
            and attn.shape[1] == 0):
        raise ValueError('the number of memory frames T (dim 1 of attn) '
                         f'must be >= 1, got attn {tuple(attn.shape)}')
    _check_tensors([('attn', 5), ('v', 5)], attn=attn, v=v)
    B, T, S, H, W = attn.shape
    if S != window * window:
        raise ValueError(
            f'attn must have window * window = {window * window} slots in '
            f'dim 2 for window={window}, got attn {tuple(attn.shape)}')
    if (v.shape[0] != B or v.shape[1] != T or tuple(v.shape[3:]) != (H, W)):
        raise ValueError(
            'v must have shape (B, T, Cv, H, W) = (%d, %d, Cv, %d, %d) to '
            'match attn (B, T, S, H, W) %s, got v %s' %
            (B, T, H, W, tuple(attn.shape), tuple(v.shape)))


def _check_scale_padding(scale, padding) -> Tuple[float, bool]:
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise ValueError(
            f'scale must be a real number, got {scale!r} '
            f'({type(scale).__name__})')
    if not math.isfinite(float(scale)):
        raise ValueError(f'scale must be finite, got {scale}')
    if padding not in _PADDINGS:
        raise ValueError(
            f'padding must be one of {_PADDINGS}, got {padding!r}')
    return float(scale), padding == 'mask'


def _check_bias(bias, q, k, window):
    """Check the position bias (T, window * window) against q and k."""
    if bias is None:
        return
    if not isinstance(bias, torch.Tensor):
        raise ValueError(
            f'bias must be a torch.Tensor or None, got {type(bias).__name__}')
    T, S = k.shape[1], window * window
    if tuple(bias.shape) != (T, S):
        raise ValueError(
            f'bias must have shape (T, window * window) = ({T}, {S}) for k '
            f'{tuple(k.shape)} and window={window}, got bias '
            f'{tuple(bias.shape)}')
    if bias.device != q.device:
        raise ValueError(f'q and bias must be on the same device: '
                         f'{_describe(q=q, bias=bias)}')
    if bias.dtype != q.dtype:
        raise ValueError(f'q and bias must have the same dtype: '
                         f'{_describe(q=q, bias=bias)}')


def _check_attention_args(q, k, v, window, dilation, scale, padding, bias):
    """Check the arguments of :func:`local_attention` (and of its unfused and
    reference forms); returns ``(window, dilation, scale, mask_padding)``."""
    window, dilation = _check_window(window, dilation)
    _check_qkv(q, k, v)
    scale, mask_padding = _check_scale_padding(scale, padding)
    _check_bias(bias, q, k, window)
    return window, dilation, scale, mask_padding


def _check_kernel_device(t: torch.Tensor):
    """Check that the compiled kernels can run on the device/dtype of t."""
    _load_ext()
    if t.device.type == 'cuda':
        if not _WITH_CUDA:
            raise RuntimeError(
                'lma_mmseg._ext was built without CUDA kernels, but the '
                f'inputs are on {t.device}. Rebuild it with CUDA: '
                '`FORCE_CUDA=1 python setup.py build_ext --inplace` (or '
                '`FORCE_CUDA=1 pip install -e .`) on a machine with the '
                'CUDA toolkit (CUDA_HOME set).')
        if t.dtype not in _CUDA_DTYPES:
            raise ValueError(f'local attention on CUDA supports '
                             f'{_CUDA_DTYPES}, got {t.dtype}')
    elif t.device.type == 'cpu':
        if t.dtype not in _CPU_DTYPES:
            raise ValueError(f'local attention on CPU supports '
                             f'{_CPU_DTYPES}, got {t.dtype}')
    else:
        raise ValueError('local attention has kernels for CPU and CUDA '
                         f'tensors only, got a tensor on {t.device}')


def _autocast_inputs(*tensors):
    """Cast the inputs of a compiled op for an active ``torch.autocast``.

    On CPU the kernels run in float32 (they have no half types); on CUDA
    in the autocast dtype (float16 or bfloat16, float32 accumulation). Only
    float32/float16/bfloat16 tensors on one device are cast; anything else is
    left to the argument checks; None entries stay None.
    """
    given = [t for t in tensors if t is not None]
    if not all(isinstance(t, torch.Tensor) for t in given):
        return tensors
    device = given[0].device
    if (device.type not in ('cpu', 'cuda')
            or not torch.is_autocast_enabled(device.type)):
        return tensors
    if any(t.device != device or t.dtype not in _AUTOCAST_DTYPES
           for t in given):
        return tensors
    dtype = (torch.float32 if device.type == 'cpu' else
             torch.get_autocast_dtype(device.type))
    return tuple(None if t is None else t.to(dtype) for t in tensors)


# --------------------------------------------------------------------------
# pure PyTorch reference
# --------------------------------------------------------------------------
def _unfold_frames(x: torch.Tensor, window: int, dilation: int):
    """(B, T, C, H, W) -> (B, T, C, S, H, W) neighbourhoods, zero padded."""
    B, T, C, H, W = x.shape
    pad = (window // 2) * dilation
    cols = F.unfold(
        x.reshape(B * T, C, H, W),
        kernel_size=window,
        dilation=dilation,
        padding=pad)
    return cols.view(B, T, C, window * window, H, W)


def _inside_mask(H, W, window, dilation, device) -> torch.Tensor:
    """(S, H, W) bool: whether slot s of pixel (y, x) is inside the map."""
    ones = torch.ones(1, 1, 1, H, W, device=device)
    return _unfold_frames(ones, window, dilation)[0, 0, 0] > 0.5


def local_correlation_reference(q: torch.Tensor,
                                k: torch.Tensor,
                                window: int = 21,
                                dilation: int = 1) -> torch.Tensor:
    """Pure PyTorch :func:`local_correlation` (memory hungry).

    Returns:
        Tensor: corr (B, T, window * window, H, W).
    """
    window, dilation = _check_window(window, dilation)
    _check_qkv(q, k)
    k_cols = _unfold_frames(k, window, dilation)  # (B, T, C, S, H, W)
    return torch.einsum('bchw,btcshw->btshw', q, k_cols)


def local_aggregation_reference(attn: torch.Tensor,
                                v: torch.Tensor,
                                window: int = 21,
                                dilation: int = 1) -> torch.Tensor:
    """Pure PyTorch :func:`local_aggregation` (memory hungry).

    Returns:
        Tensor: out (B, Cv, H, W).
    """
    window, dilation = _check_window(window, dilation)
    _check_attn_v(attn, v, window)
    v_cols = _unfold_frames(v, window, dilation)  # (B, T, Cv, S, H, W)
    return torch.einsum('btshw,btcshw->bchw', attn, v_cols)


def _attention_entry(name: str, run: Callable, doc: str) -> Callable:
    """A local attention entry point: the one signature of
    :func:`local_attention`, :func:`local_attention_unfused` and
    :func:`local_attention_reference`, calling
    ``run(q, k, v, window, dilation, scale, padding, bias)``."""

    def entry(q: torch.Tensor,
              k: torch.Tensor,
              v: torch.Tensor,
              window: int = 21,
              dilation: int = 1,
              scale: float = 1.0,
              padding: str = 'zeros',
              bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        return run(q, k, v, window, dilation, scale, padding, bias)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = doc
    return entry


def _reference_attention(q, k, v, window, dilation, scale, padding, bias):
    window, dilation, scale, mask_padding = _check_attention_args(
        q, k, v, window, dilation, scale, padding, bias)
    return _softmax_attention(local_correlation_reference,
                              local_aggregation_reference, q, k, v, window,
                              dilation, scale, mask_padding, bias)


local_attention_reference = _attention_entry(
    'local_attention_reference', _reference_attention,
    """Pure PyTorch local memory attention; defines the op's semantics.

    It materialises the neighbourhoods of every key and value
    (``T * window**2`` copies of k and v), so it needs a lot of memory; it is
    meant for tests and benchmarks. Arguments and result are those of
    :func:`local_attention`. It runs on any device and floating dtype.
    """)


def _softmax_attention(correlation, aggregation, q, k, v, window, dilation,
                       scale, mask_padding, bias):
    """Local attention from a correlation and an aggregation function
    (:func:`local_correlation`, :func:`local_aggregation` or their
    references) for checked arguments."""
    _, _, _, H, W = k.shape
    logits = correlation(q, k, window, dilation) * scale
    if bias is not None:
        logits = logits + bias[None, :, :, None, None]
    if mask_padding:
        inside = _inside_mask(H, W, window, dilation, q.device)
        logits = logits.masked_fill(~inside, float('-inf'))
    # one softmax jointly over the T * S slots of every query pixel
    attn = logits.flatten(1, 2).softmax(dim=1).view_as(logits)
    return aggregation(attn, v, window, dilation)


# --------------------------------------------------------------------------
# torch.library: fake kernels and autograd of the compiled ops
# --------------------------------------------------------------------------
# The schemas and the CPU/CUDA kernels are registered in C++
# (csrc/pytorch/local_attention.cpp); torch.ops.lma.local_attention_forward
# returns (out, lse), with lse the float32 (float64 for float64 inputs)
# log-sum-exp of the logits per query pixel, kept for backward; its optional
# last argument is the position bias (T, S). The backward returns (grad_q,
# grad_k, grad_v, grad_bias), grad_bias empty (0 elements) without a bias.
def _lse_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


_FAKE_KERNELS = {}


def _fake_kernel_of(*ops):
    """Make the decorated function the fake kernel of the ops ``lma::<op>``
    (registered by :func:`_register_ops`)."""

    def record(fn):
        _FAKE_KERNELS.update((op, fn) for op in ops)
        return fn

    return record


@_fake_kernel_of('local_attention_forward')
def _fake_attention_forward(q, k, v, window, dilation, scale, mask_padding,
                            bias=None):
    B, _, H, W = q.shape
    out = q.new_empty((B, v.shape[2], H, W))
    lse = q.new_empty((B, H, W), dtype=_lse_dtype(q))
    return out, lse


def _empty_like(*tensors):
    """Contiguous tensors like ``tensors`` (the kernels' outputs)."""
    return tuple(
        torch.empty_like(t, memory_format=torch.contiguous_format)
        for t in tensors)


@_fake_kernel_of('local_attention_backward')
def _fake_attention_backward(grad_out, q, k, v, out, lse, window, dilation,
                             scale, mask_padding, bias=None):
    grad_bias = q.new_empty((0, )) if bias is None else _empty_like(bias)[0]
    return _empty_like(q, k, v) + (grad_bias, )


@_fake_kernel_of('local_correlation_forward')
def _fake_correlation_forward(q, k, window, dilation):
    B, T, _, H, W = k.shape
    return q.new_empty((B, T, window * window, H, W))


@_fake_kernel_of('local_aggregation_forward')
def _fake_aggregation_forward(attn, v, window, dilation):
    B, _, Cv, H, W = v.shape
    return v.new_empty((B, Cv, H, W))


@_fake_kernel_of('local_correlation_backward', 'local_aggregation_backward')
def _fake_unfused_backward(grad, x, y, window, dilation):
    return _empty_like(x, y)


def _attention_setup_context(ctx, inputs, output):
    q, k, v, window, dilation, scale, mask_padding, bias = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, bias)
    ctx.args = (window, dilation, scale, mask_padding)
    ctx.mark_non_differentiable(lse)


def _attention_backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse, bias = ctx.saved_tensors
    grad_q, grad_k, grad_v, grad_bias = \
        torch.ops.lma.local_attention_backward(grad_out, q, k, v, out, lse,
                                               *ctx.args, bias)
    if bias is None:
        grad_bias = None
    return grad_q, grad_k, grad_v, None, None, None, None, grad_bias


# The unfused ops local_correlation and local_aggregation both map
# (x, y, window, dilation) to one tensor; their backward ops map
# (grad, x, y, window, dilation) to (grad_x, grad_y).
def _unfused_setup_context(ctx, inputs, output):
    x, y, window, dilation = inputs
    ctx.save_for_backward(x, y)
    ctx.args = (window, dilation)


def _unfused_autograd(backward_op):
    """The autograd formula of an unfused op with backward op ``backward_op``.
    """

    def backward(ctx, grad):
        grad_x, grad_y = backward_op(grad, *ctx.saved_tensors, *ctx.args)
        return grad_x, grad_y, None, None

    return backward


def _register_ops():
    lib = torch.library
    for op, fake in _FAKE_KERNELS.items():
        lib.register_fake(f'lma::{op}', fake)
    lib.register_autograd(
        'lma::local_attention_forward',
        _attention_backward,
        setup_context=_attention_setup_context)
    for op in ('local_correlation', 'local_aggregation'):
        lib.register_autograd(
            f'lma::{op}_forward',
            _unfused_autograd(getattr(torch.ops.lma, f'{op}_backward')),
            setup_context=_unfused_setup_context)


if _ext is not None:
    _register_ops()


# --------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------
def _fused_attention(q, k, v, window, dilation, scale, padding, bias):
    q, k, v, bias = _autocast_inputs(q, k, v, bias)
    window, dilation, scale, mask_padding = _check_attention_args(
        q, k, v, window, dilation, scale, padding, bias)
    _check_kernel_device(q)
    out, _ = torch.ops.lma.local_attention_forward(q, k, v, window, dilation,
                                                   scale, mask_padding, bias)
    return out


local_attention = _attention_entry(
    'local_attention', _fused_attention,
    """Fused local memory attention (compiled kernels).

    Args:
        q (Tensor): queries of the current frame, (B, C, H, W).
        k (Tensor): keys of the T memory frames, (B, T, C, H, W).
        v (Tensor): values of the T memory frames, (B, T, Cv, H, W).
        window (int): odd side P of the P x P window. Default: 21.
        dilation (int): spacing of the window positions, >= 1. Default: 1.
        scale (float): factor on the dot products before the softmax.
            Default: 1.0 (no scaling, as in the paper).
        padding (str): ``'zeros'``: positions outside the map take part in
            the softmax with logit 0 and value 0 (the paper); ``'mask'``:
            they are left out of the softmax. Default: ``'zeros'``.
        bias (Tensor, optional): a position bias (T, window * window), one
            logit per memory frame and window slot added to every query
            pixel's logits before the softmax: ``logits[b, t, s, y, x] =
            scale * corr[b, t, s, y, x] + bias[t, s]``; with
            ``padding='zeros'`` an outside slot takes part with logit
            ``bias[t, s]`` (its correlation is 0), with ``'mask'`` it stays
            left out. Same dtype and device as q; differentiable (its
            gradient sums over the batch and the pixels). Default: None.

    Returns:
        Tensor: (B, Cv, H, W), the attention read-out; one softmax per query
        pixel runs jointly over all ``T * window * window`` slots.

    Inputs may have any strides. Float32/float64 on CPU; float32, float16
    and bfloat16 (float32 accumulation) on CUDA. Differentiable in q, k, v
    (the op is ``torch.ops.lma.local_attention_forward``, so it runs under
    ``torch.compile(fullgraph=True)`` and ``torch.export``).

    Under ``torch.autocast`` the inputs may mix float32, float16 and
    bfloat16: on CPU they are cast to float32 and the result is float32; on
    CUDA they are cast to the autocast dtype (float16 or bfloat16, float32
    accumulation) and the result has that dtype. The same holds for
    :func:`local_correlation`, :func:`local_aggregation` and
    :func:`local_attention_unfused`.
    """)


def local_correlation(q: torch.Tensor,
                      k: torch.Tensor,
                      window: int = 21,
                      dilation: int = 1) -> torch.Tensor:
    """Local correlation of queries with memory keys (compiled kernels).

    Args:
        q (Tensor): (B, C, H, W).
        k (Tensor): (B, T, C, H, W).
        window (int): odd window side P. Default: 21.
        dilation (int): window spacing, >= 1. Default: 1.

    Returns:
        Tensor: corr (B, T, window * window, H, W) with
        ``corr[b, t, i * window + j, y, x] = <q[b, :, y, x],
        k[b, t, :, y + dy, x + dx]>`` and 0 outside the map.
        Differentiable in q and k.
    """
    window, dilation = _check_window(window, dilation)
    q, k = _autocast_inputs(q, k)
    _check_qkv(q, k)
    _check_kernel_device(q)
    return torch.ops.lma.local_correlation_forward(q, k, window, dilation)


def local_aggregation(attn: torch.Tensor,
                      v: torch.Tensor,
                      window: int = 21,
                      dilation: int = 1) -> torch.Tensor:
    """Weighted sum of memory values over local windows (compiled kernels).

    Args:
        attn (Tensor): weights (B, T, window * window, H, W).
        v (Tensor): (B, T, Cv, H, W).
        window (int): odd window side P. Default: 21.
        dilation (int): window spacing, >= 1. Default: 1.

    Returns:
        Tensor: (B, Cv, H, W), ``sum_{t, s} attn[b, t, s, y, x] *
        v[b, t, :, y + dy, x + dx]`` (0 outside the map). Differentiable in
        attn and v.
    """
    window, dilation = _check_window(window, dilation)
    attn, v = _autocast_inputs(attn, v)
    _check_attn_v(attn, v, window)
    _check_kernel_device(attn)
    return torch.ops.lma.local_aggregation_forward(attn, v, window, dilation)


def _unfused_attention(q, k, v, window, dilation, scale, padding, bias):
    q, k, v, bias = _autocast_inputs(q, k, v, bias)
    window, dilation, scale, mask_padding = _check_attention_args(
        q, k, v, window, dilation, scale, padding, bias)
    return _softmax_attention(local_correlation, local_aggregation, q, k, v,
                              window, dilation, scale, mask_padding, bias)


local_attention_unfused = _attention_entry(
    'local_attention_unfused', _unfused_attention,
    """:func:`local_attention` from its unfused building blocks.

    :func:`local_correlation`, then the joint softmax over the
    ``T * window * window`` slots in PyTorch, then :func:`local_aggregation`.
    Same arguments and result as :func:`local_attention`; it materialises
    the ``(B, T, window**2, H, W)`` logits and attention, and is the
    baseline the fused op is measured against.
    """)
