"""Pure PyTorch local memory attention: the definition every kernel is held
to.

For every query pixel ``(y, x)`` of the current frame the op looks at a
``window x window`` neighbourhood centred on the same position in each of the
``T`` memory frames. Window slot ``s = i * window + j`` (``i, j`` in
``[0, window)``) has the offset::

    dy = (i - window // 2) * dilation,  dx = (j - window // 2) * dilation

and the correlation is::

    corr[b, t, s, y, x] = sum_c q[b, c, y, x] * k[b, t, c, y + dy, x + dx]

(0 where ``(y + dy, x + dx)`` is outside the map). The attention takes
``logits = scale * corr (+ bias[t, s])``, runs ONE softmax per query pixel
jointly over all ``T * window * window`` slots and returns the
attention-weighted sum of the memory values at the same offsets. With
``padding='zeros'`` (Paul et al., IROS 2021) an outside position takes part
in the softmax with logit 0 (plus its bias) and value 0; with
``padding='mask'`` it is excluded from the softmax.

The functions here take arguments that were already checked (see
:mod:`.checks`); the entry points of :mod:`.functional`
(:func:`~.functional.local_attention_reference`,
:func:`~.functional.local_correlation_reference`,
:func:`~.functional.local_aggregation_reference`) check and call them. They
materialise the neighbourhoods of every key and value (``T * window**2``
copies), run on any device and floating dtype, and are meant for tests,
benchmarks and machines without the compiled kernels.
"""
from typing import Callable, Optional

import torch
import torch.nn.functional as F

__all__ = [
    'unfold_frames', 'inside_mask', 'correlation', 'aggregation',
    'attention_logits', 'attention_weights', 'lse_dtype', 'attention',
    'read_out'
]


def unfold_frames(x: torch.Tensor, window: int,
                  dilation: int) -> torch.Tensor:
    """The zero-padded neighbourhoods of every pixel of every frame.

    Args:
        x (Tensor): (B, T, C, H, W).
        window (int): Odd window side.
        dilation (int): Window spacing.

    Returns:
        Tensor: (B, T, C, window * window, H, W); entry ``[b, t, c, s, y,
        x]`` is ``x[b, t, c, y + dy, x + dx]`` of slot ``s`` (0 outside the
        map).
    """
    B, T, C, H, W = x.shape
    pad = (window // 2) * dilation
    cols = F.unfold(
        x.reshape(B * T, C, H, W),
        kernel_size=window,
        dilation=dilation,
        padding=pad)
    return cols.view(B, T, C, window * window, H, W)


def inside_mask(H: int, W: int, window: int, dilation: int,
                device: torch.device) -> torch.Tensor:
    """(window * window, H, W) bool: whether slot ``s`` of pixel ``(y, x)``
    lies inside the ``H x W`` map."""
    ones = torch.ones(1, 1, 1, H, W, device=device)
    return unfold_frames(ones, window, dilation)[0, 0, 0] > 0.5


def correlation(q: torch.Tensor, k: torch.Tensor, window: int,
                dilation: int) -> torch.Tensor:
    """Local correlation of q (B, C, H, W) with k (B, T, C, H, W).

    Returns:
        Tensor: corr (B, T, window * window, H, W).
    """
    k_cols = unfold_frames(k, window, dilation)  # (B, T, C, S, H, W)
    return torch.einsum('bchw,btcshw->btshw', q, k_cols)


def aggregation(attn: torch.Tensor, v: torch.Tensor, window: int,
                dilation: int) -> torch.Tensor:
    """Weighted sum of v (B, T, Cv, H, W) over the local windows with the
    weights attn (B, T, window * window, H, W).

    Returns:
        Tensor: (B, Cv, H, W).
    """
    v_cols = unfold_frames(v, window, dilation)  # (B, T, Cv, S, H, W)
    return torch.einsum('btshw,btcshw->bchw', attn, v_cols)


def attention_logits(corr: torch.Tensor, window: int, dilation: int,
                     scale: float, mask_padding: bool,
                     bias: Optional[torch.Tensor]) -> torch.Tensor:
    """The logits of the softmax from a correlation.

    Args: as :func:`attention_weights`.

    Returns:
        Tensor: logits (B, T, window * window, H, W): ``scale * corr`` plus
        the bias, ``-inf`` for slots left out (``mask_padding``).
    """
    _, _, _, H, W = corr.shape
    logits = corr * scale
    if bias is not None:
        logits = logits + bias[None, :, :, None, None]
    if mask_padding:
        inside = inside_mask(H, W, window, dilation, corr.device)
        logits = logits.masked_fill(~inside, float('-inf'))
    return logits


def lse_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the log-normaliser for inputs of ``dtype``: the kernels'
    accumulation type (float64 for float64, float32 otherwise)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def attention_weights(corr: torch.Tensor,
                      window: int,
                      dilation: int,
                      scale: float,
                      mask_padding: bool,
                      bias: Optional[torch.Tensor],
                      return_lse: bool = False):
    """The attention from a correlation: one softmax per query pixel.

    Args:
        corr (Tensor): (B, T, window * window, H, W), the correlation.
        window (int): Odd window side.
        dilation (int): Window spacing.
        scale (float): Factor on the correlation.
        mask_padding (bool): Leave slots outside the map out of the softmax
            (``padding='mask'``) instead of giving them logit 0 (plus their
            bias).
        bias (Tensor, optional): Position bias (T, window * window).
        return_lse (bool): Also return the log-normaliser.

    Returns:
        Tensor | tuple[Tensor, Tensor]: attn (B, T, window * window, H, W),
        summing to 1 over the ``T * window * window`` slots of every query
        pixel; with ``return_lse`` also lse (B, H, W), the log-sum-exp of
        the logits over those slots (in :func:`lse_dtype`).
    """
    logits = attention_logits(corr, window, dilation, scale, mask_padding,
                              bias)
    # one softmax jointly over the T * S slots of every query pixel
    attn = logits.flatten(1, 2).softmax(dim=1).view_as(logits)
    if not return_lse:
        return attn
    lse = logits.to(lse_dtype(logits.dtype)).flatten(1, 2).logsumexp(dim=1)
    return attn, lse


def attention(q: torch.Tensor,
              k: torch.Tensor,
              v: torch.Tensor,
              window: int,
              dilation: int,
              scale: float,
              mask_padding: bool,
              bias: Optional[torch.Tensor],
              return_lse: bool = False):
    """Local memory attention of q (B, C, H, W) over the memory keys
    k (B, T, C, H, W) and values v (B, T, Cv, H, W).

    Returns:
        Tensor | tuple[Tensor, Tensor]: (B, Cv, H, W), the attention
        read-out; with ``return_lse`` also the log-normaliser (B, H, W).
    """
    return read_out(
        correlation(q, k, window, dilation), v, window, dilation, scale,
        mask_padding, bias, return_lse)


def read_out(corr: torch.Tensor,
             v: torch.Tensor,
             window: int,
             dilation: int,
             scale: float,
             mask_padding: bool,
             bias: Optional[torch.Tensor],
             return_lse: bool = False,
             aggregate: Callable = aggregation):
    """The attention read-out from a correlation: the softmax of
    :func:`attention_weights`, then ``aggregate(attn, v, window,
    dilation)`` (:func:`aggregation`, or the compiled kernel of the unfused
    path).

    Returns:
        Tensor | tuple[Tensor, Tensor]: (B, Cv, H, W); with ``return_lse``
        also the log-normaliser (B, H, W).
    """
    weights = attention_weights(corr, window, dilation, scale, mask_padding,
                                bias, return_lse)
    if not return_lse:
        return aggregate(weights, v, window, dilation)
    attn, lse = weights
    return aggregate(attn, v, window, dilation), lse
