"""``torch.library`` registration of the compiled ops: fake kernels and
autograd.

The schemas and the CPU/CUDA kernels are registered in C++
(``csrc/pytorch/local_attention.cpp``) when ``lma_mmseg._ext`` is imported:

* ``lma::local_attention_forward(q, k, v, window, dilation, scale,
  mask_padding, bias=None) -> (out, lse)``, with ``lse`` the float32
  (float64 for float64 inputs) log-sum-exp of the logits per query pixel,
  an output of its own (``local_attention(..., return_lse=True)``) and kept
  for backward;
* ``lma::local_attention_backward(grad_out, q, k, v, out, lse, window,
  dilation, scale, mask_padding, bias=None, grad_lse=None) -> (grad_q,
  grad_k, grad_v, grad_bias)``, ``grad_bias`` empty (0 elements) without a
  bias; ``grad_lse`` is the gradient of ``lse`` (None: zero), which adds
  ``p * grad_lse`` to the gradient of every logit;
* ``lma::local_correlation_forward`` / ``lma::local_aggregation_forward``
  ``(x, y, window, dilation) -> Tensor`` and their backward ops
  ``(grad, x, y, window, dilation) -> (grad_x, grad_y)``.

This module gives them fake kernels (shapes and dtypes without computing,
for ``torch.compile`` and ``torch.export``) and autograd formulas over the
backward ops. :func:`register_ops` runs once, when this module is imported
with the extension built.
"""
from typing import Optional, Tuple

import torch

from .extension import ext_available
from .reference import lse_dtype

__all__ = ['register_ops']

Tensor = torch.Tensor


def _empty_like(*tensors: Tensor) -> Tuple[Tensor, ...]:
    """Contiguous tensors like ``tensors`` (the kernels' outputs)."""
    return tuple(
        torch.empty_like(t, memory_format=torch.contiguous_format)
        for t in tensors)


# --------------------------------------------------------------------------
# fake kernels
# --------------------------------------------------------------------------
def _fake_attention_forward(q: Tensor,
                            k: Tensor,
                            v: Tensor,
                            window: int,
                            dilation: int,
                            scale: float,
                            mask_padding: bool,
                            bias: Optional[Tensor] = None
                            ) -> Tuple[Tensor, Tensor]:
    """out (B, Cv, H, W) and lse (B, H, W)."""
    B, _, H, W = q.shape
    out = q.new_empty((B, v.shape[2], H, W))
    lse = q.new_empty((B, H, W), dtype=lse_dtype(q.dtype))
    return out, lse


def _fake_attention_backward(grad_out: Tensor,
                             q: Tensor,
                             k: Tensor,
                             v: Tensor,
                             out: Tensor,
                             lse: Tensor,
                             window: int,
                             dilation: int,
                             scale: float,
                             mask_padding: bool,
                             bias: Optional[Tensor] = None,
                             grad_lse: Optional[Tensor] = None
                             ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """grad_q, grad_k, grad_v like q, k, v; grad_bias like bias (empty
    without a bias)."""
    grad_bias = q.new_empty((0, )) if bias is None else _empty_like(bias)[0]
    return _empty_like(q, k, v) + (grad_bias, )


def _fake_correlation_forward(q: Tensor, k: Tensor, window: int,
                              dilation: int) -> Tensor:
    """corr (B, T, window * window, H, W)."""
    B, T, _, H, W = k.shape
    return q.new_empty((B, T, window * window, H, W))


def _fake_aggregation_forward(attn: Tensor, v: Tensor, window: int,
                              dilation: int) -> Tensor:
    """out (B, Cv, H, W)."""
    B, _, Cv, H, W = v.shape
    return v.new_empty((B, Cv, H, W))


def _fake_bilinear_backward(grad: Tensor, x: Tensor, y: Tensor, window: int,
                            dilation: int) -> Tuple[Tensor, Tensor]:
    """grad_x and grad_y like x and y (correlation and aggregation)."""
    return _empty_like(x, y)


# --------------------------------------------------------------------------
# autograd
# --------------------------------------------------------------------------
def _attention_setup_context(ctx, inputs, output) -> None:
    q, k, v, window, dilation, scale, mask_padding, bias = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, bias)
    ctx.args = (window, dilation, scale, mask_padding)


def _attention_backward(ctx, grad_out: Tensor, grad_lse: Tensor):
    """Gradients of q, k, v (and the bias) from those of both outputs:
    ``lse`` is differentiable too (its gradient in the logits is the
    softmax itself). Autograd gives an unused output's gradient as
    zeros."""
    q, k, v, out, lse, bias = ctx.saved_tensors
    grad_q, grad_k, grad_v, grad_bias = \
        torch.ops.lma.local_attention_backward(grad_out, q, k, v, out, lse,
                                               *ctx.args, bias, grad_lse)
    if bias is None:
        grad_bias = None
    return grad_q, grad_k, grad_v, None, None, None, None, grad_bias


def _bilinear_setup_context(ctx, inputs, output) -> None:
    """Saves ``(x, y)`` and ``(window, dilation)`` of the correlation and
    the aggregation ops, which both map ``(x, y, window, dilation)`` to one
    tensor."""
    x, y, window, dilation = inputs
    ctx.save_for_backward(x, y)
    ctx.args = (window, dilation)


def _correlation_backward(ctx, grad: Tensor):
    grad_q, grad_k = torch.ops.lma.local_correlation_backward(
        grad, *ctx.saved_tensors, *ctx.args)
    return grad_q, grad_k, None, None


def _aggregation_backward(ctx, grad: Tensor):
    grad_attn, grad_v = torch.ops.lma.local_aggregation_backward(
        grad, *ctx.saved_tensors, *ctx.args)
    return grad_attn, grad_v, None, None


def register_ops() -> None:
    """Register the fake kernels and autograd formulas of the ``lma::``
    ops (the extension must be imported first)."""
    lib = torch.library
    lib.register_fake('lma::local_attention_forward', _fake_attention_forward)
    lib.register_fake('lma::local_attention_backward',
                      _fake_attention_backward)
    lib.register_fake('lma::local_correlation_forward',
                      _fake_correlation_forward)
    lib.register_fake('lma::local_aggregation_forward',
                      _fake_aggregation_forward)
    lib.register_fake('lma::local_correlation_backward',
                      _fake_bilinear_backward)
    lib.register_fake('lma::local_aggregation_backward',
                      _fake_bilinear_backward)
    lib.register_autograd(
        'lma::local_attention_forward',
        _attention_backward,
        setup_context=_attention_setup_context)
    lib.register_autograd(
        'lma::local_correlation_forward',
        _correlation_backward,
        setup_context=_bilinear_setup_context)
    lib.register_autograd(
        'lma::local_aggregation_forward',
        _aggregation_backward,
        setup_context=_bilinear_setup_context)


if ext_available():
    register_ops()
