"""Entry points of the local memory attention ops.

The semantics are those of :mod:`.reference` (see its docstring): for every
query pixel, dot products with the memory keys in a ``window x window``
neighbourhood of each of the ``T`` memory frames, ONE softmax jointly over
all ``T * window * window`` slots, and the attention-weighted sum of the
memory values.

* :func:`local_attention`: the fused compiled op
  (``torch.ops.lma.local_attention_forward``); it never materialises the
  ``(B, T * window**2, H, W)`` attention in forward and keeps one
  log-sum-exp per query pixel for backward.
* :func:`local_attention_unfused`: :func:`local_correlation`, the joint
  softmax in PyTorch, :func:`local_aggregation` (the compiled building
  blocks; the baseline the fused op is measured against).
* :func:`local_attention_reference`, :func:`local_correlation_reference`,
  :func:`local_aggregation_reference`: pure PyTorch, any device and dtype,
  no compiled extension needed.

Every entry point checks its arguments (:mod:`.checks`) before it calls an
op, so a bad argument gets a ValueError that names it. The compiled ops are
registered with ``torch.library`` (:mod:`.library`), so the entry points run
under ``torch.compile(fullgraph=True)`` and ``torch.export``. Without the
compiled extension the compiled entry points raise an ImportError naming
``lma_mmseg._ext``.
"""
from typing import Optional, Tuple, Union

import torch

from . import library  # noqa: F401  (fake kernels and autograd of the ops)
from . import reference
from .checks import (check_attention_args, check_attn_v, check_kernel_device,
                     check_qkv, check_window)

__all__ = [
    'local_attention', 'local_attention_unfused', 'local_attention_reference',
    'local_correlation', 'local_aggregation', 'local_correlation_reference',
    'local_aggregation_reference', 'ATTENTION_IMPLS'
]

_AUTOCAST_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

#: What the attention entry points return: the read-out, or ``(out, lse)``
#: with ``return_lse=True``.
AttentionOutput = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


def _autocast_inputs(*tensors: Optional[torch.Tensor]
                     ) -> Tuple[Optional[torch.Tensor], ...]:
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


def local_attention(q: torch.Tensor,
                    k: torch.Tensor,
                    v: torch.Tensor,
                    window: int = 21,
                    dilation: int = 1,
                    scale: float = 1.0,
                    padding: str = 'zeros',
                    bias: Optional[torch.Tensor] = None,
                    return_lse: bool = False) -> AttentionOutput:
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
        return_lse (bool): Also return the softmax's log-normaliser, as
            NATTEN's and FlashAttention's ``return_lse``. Default: False.

    Returns:
        Tensor | tuple[Tensor, Tensor]: (B, Cv, H, W), the attention
        read-out; one softmax per query pixel runs jointly over all
        ``T * window * window`` slots. With ``return_lse``, ``(out, lse)``:
        lse (B, H, W) is ``logsumexp`` of the logits over the slots that
        take part (how strongly the memory matches each query pixel),
        float32 (float64 for float64 inputs), differentiable.

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

    Raises:
        ImportError: ``lma_mmseg._ext`` is not built.
        ValueError: An argument is out of range or does not match the
            others (the message names it).
    """
    q, k, v, bias = _autocast_inputs(q, k, v, bias)
    window, dilation, scale, mask_padding = check_attention_args(
        q, k, v, window, dilation, scale, padding, bias)
    check_kernel_device(q)
    out, lse = torch.ops.lma.local_attention_forward(q, k, v, window,
                                                     dilation, scale,
                                                     mask_padding, bias)
    return (out, lse) if return_lse else out


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

    Raises:
        ImportError: ``lma_mmseg._ext`` is not built.
    """
    window, dilation = check_window(window, dilation)
    q, k = _autocast_inputs(q, k)
    check_qkv(q, k)
    check_kernel_device(q)
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

    Raises:
        ImportError: ``lma_mmseg._ext`` is not built.
    """
    window, dilation = check_window(window, dilation)
    attn, v = _autocast_inputs(attn, v)
    check_attn_v(attn, v, window)
    check_kernel_device(attn)
    return torch.ops.lma.local_aggregation_forward(attn, v, window, dilation)


def local_attention_unfused(q: torch.Tensor,
                            k: torch.Tensor,
                            v: torch.Tensor,
                            window: int = 21,
                            dilation: int = 1,
                            scale: float = 1.0,
                            padding: str = 'zeros',
                            bias: Optional[torch.Tensor] = None,
                            return_lse: bool = False) -> AttentionOutput:
    """:func:`local_attention` from its unfused building blocks.

    :func:`local_correlation`, then the joint softmax over the
    ``T * window * window`` slots in PyTorch, then :func:`local_aggregation`.
    It materialises the ``(B, T, window**2, H, W)`` logits and attention,
    and is the baseline the fused op is measured against.

    Args:
        q (Tensor): queries of the current frame, (B, C, H, W).
        k (Tensor): keys of the T memory frames, (B, T, C, H, W).
        v (Tensor): values of the T memory frames, (B, T, Cv, H, W).
        window (int): odd side P of the P x P window. Default: 21.
        dilation (int): spacing of the window positions, >= 1. Default: 1.
        scale (float): factor on the dot products before the softmax.
            Default: 1.0.
        padding (str): ``'zeros'`` or ``'mask'``, as in
            :func:`local_attention`. Default: ``'zeros'``.
        bias (Tensor, optional): position bias (T, window * window), as in
            :func:`local_attention`. Default: None.
        return_lse (bool): Also return the log-normaliser (B, H, W), as in
            :func:`local_attention`. Default: False.

    Returns:
        Tensor | tuple[Tensor, Tensor]: (B, Cv, H, W), the attention
        read-out; with ``return_lse``, ``(out, lse)``.

    Raises:
        ImportError: ``lma_mmseg._ext`` is not built.
    """
    q, k, v, bias = _autocast_inputs(q, k, v, bias)
    window, dilation, scale, mask_padding = check_attention_args(
        q, k, v, window, dilation, scale, padding, bias)
    return reference.read_out(
        local_correlation(q, k, window, dilation), v, window, dilation, scale,
        mask_padding, bias, return_lse, aggregate=local_aggregation)


def local_attention_reference(q: torch.Tensor,
                              k: torch.Tensor,
                              v: torch.Tensor,
                              window: int = 21,
                              dilation: int = 1,
                              scale: float = 1.0,
                              padding: str = 'zeros',
                              bias: Optional[torch.Tensor] = None,
                              return_lse: bool = False) -> AttentionOutput:
    """Pure PyTorch local memory attention; defines the op's semantics.

    It materialises the neighbourhoods of every key and value
    (``T * window**2`` copies of k and v), so it needs a lot of memory; it is
    meant for tests, benchmarks and machines without the compiled kernels.
    It runs on any device and floating dtype.

    Args:
        q (Tensor): queries of the current frame, (B, C, H, W).
        k (Tensor): keys of the T memory frames, (B, T, C, H, W).
        v (Tensor): values of the T memory frames, (B, T, Cv, H, W).
        window (int): odd side P of the P x P window. Default: 21.
        dilation (int): spacing of the window positions, >= 1. Default: 1.
        scale (float): factor on the dot products before the softmax.
            Default: 1.0.
        padding (str): ``'zeros'`` or ``'mask'``, as in
            :func:`local_attention`. Default: ``'zeros'``.
        bias (Tensor, optional): position bias (T, window * window), as in
            :func:`local_attention`. Default: None.
        return_lse (bool): Also return the log-normaliser (B, H, W), as in
            :func:`local_attention`. Default: False.

    Returns:
        Tensor | tuple[Tensor, Tensor]: (B, Cv, H, W), the attention
        read-out; with ``return_lse``, ``(out, lse)``.
    """
    window, dilation, scale, mask_padding = check_attention_args(
        q, k, v, window, dilation, scale, padding, bias)
    return reference.attention(q, k, v, window, dilation, scale,
                               mask_padding, bias, bool(return_lse))


def local_correlation_reference(q: torch.Tensor,
                                k: torch.Tensor,
                                window: int = 21,
                                dilation: int = 1) -> torch.Tensor:
    """Pure PyTorch :func:`local_correlation` (memory hungry).

    Args:
        q (Tensor): (B, C, H, W).
        k (Tensor): (B, T, C, H, W).
        window (int): odd window side P. Default: 21.
        dilation (int): window spacing, >= 1. Default: 1.

    Returns:
        Tensor: corr (B, T, window * window, H, W).
    """
    window, dilation = check_window(window, dilation)
    check_qkv(q, k)
    return reference.correlation(q, k, window, dilation)


def local_aggregation_reference(attn: torch.Tensor,
                                v: torch.Tensor,
                                window: int = 21,
                                dilation: int = 1) -> torch.Tensor:
    """Pure PyTorch :func:`local_aggregation` (memory hungry).

    Args:
        attn (Tensor): weights (B, T, window * window, H, W).
        v (Tensor): (B, T, Cv, H, W).
        window (int): odd window side P. Default: 21.
        dilation (int): window spacing, >= 1. Default: 1.

    Returns:
        Tensor: out (B, Cv, H, W).
    """
    window, dilation = check_window(window, dilation)
    check_attn_v(attn, v, window)
    return reference.aggregation(attn, v, window, dilation)


#: The local attention entry points by implementation name, as
#: ``LocalMemoryNeck(attn_impl=...)`` chooses them: ``'fused'`` and
#: ``'unfused'`` need the compiled extension, ``'reference'`` runs anywhere.
ATTENTION_IMPLS = {
    'fused': local_attention,
    'unfused': local_attention_unfused,
    'reference': local_attention_reference,
}
