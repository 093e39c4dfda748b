"""Analytic FLOP counts of the local attention ops.

Counted as mmengine counts every other op: one fused multiply-add is one
FLOP and element-wise work (the softmax, the scale) is left out.

* the fused attention: ``B * T * window**2 * H * W * (C + Cv)`` (the
  dot products with the keys and the weighted sum of the values);
* the correlation: ``B * T * window**2 * H * W * C``;
* the aggregation: ``B * T * window**2 * H * W * Cv``.

Slots outside the map are counted as well (the count does not depend on the
padding). :data:`FLOP_HANDLES` carries these counts to mmengine's
``FlopAnalyzer``, keyed by the names the ops have in a ``torch.jit.trace``
graph::

    from mmengine.analysis import FlopAnalyzer
    from lma_mmseg.ops import FLOP_HANDLES

    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle(**FLOP_HANDLES)
    analyzer.total()

Backward ops are not traced by ``FlopAnalyzer`` (it runs the forward
only); they have no handle.
"""
from typing import Any, List, Sequence

__all__ = [
    'local_attention_flops', 'local_correlation_flops',
    'local_aggregation_flops', 'FLOP_HANDLES'
]


def _dims(shape: Sequence[int], rank: int, name: str) -> List[int]:
    shape = [int(s) for s in shape]
    if len(shape) != rank:
        raise ValueError(f'{name} must be a shape of {rank} sizes, got '
                         f'{tuple(shape)}')
    return shape


def _window(window) -> int:
    if isinstance(window, bool) or int(window) != window or window < 1:
        raise ValueError(f'window must be an int >= 1, got {window!r}')
    return int(window)


def local_attention_flops(q_shape: Sequence[int], k_shape: Sequence[int],
                          v_shape: Sequence[int], window: int) -> int:
    """Multiply-adds of one :func:`local_attention` call.

    Args:
        q_shape (Sequence[int]): (B, C, H, W).
        k_shape (Sequence[int]): (B, T, C, H, W).
        v_shape (Sequence[int]): (B, T, Cv, H, W).
        window (int): window side P.

    Returns:
        int: ``B * T * P * P * H * W * (C + Cv)``.
    """
    B, C, H, W = _dims(q_shape, 4, 'q_shape')
    T = _dims(k_shape, 5, 'k_shape')[1]
    Cv = _dims(v_shape, 5, 'v_shape')[2]
    return B * T * _window(window)**2 * H * W * (C + Cv)


def local_correlation_flops(q_shape: Sequence[int], k_shape: Sequence[int],
                            window: int) -> int:
    """Multiply-adds of :func:`local_correlation`: ``B*T*P*P*H*W*C``."""
    B, C, H, W = _dims(q_shape, 4, 'q_shape')
    T = _dims(k_shape, 5, 'k_shape')[1]
    return B * T * _window(window)**2 * H * W * C


def local_aggregation_flops(attn_shape: Sequence[int],
                            v_shape: Sequence[int]) -> int:
    """Multiply-adds of :func:`local_aggregation`: ``B*T*S*H*W*Cv``."""
    B, T, S, H, W = _dims(attn_shape, 5, 'attn_shape')
    Cv = _dims(v_shape, 5, 'v_shape')[2]
    return B * T * S * H * W * Cv


# ----------------------------------------------------------------------
# mmengine FlopAnalyzer handles (inputs/outputs are torch._C.Value lists)
# ----------------------------------------------------------------------
def _shape(value: Any, what: str) -> List[int]:
    from mmengine.analysis.jit_handles import get_shape
    shape = get_shape(value)
    if shape is None:
        raise ValueError(f'the traced {what} has no complete shape')
    return shape


def _const(value: Any, what: str) -> int:
    ivalue = value.toIValue()
    if ivalue is None:
        raise ValueError(f'the traced {what} is not a constant')
    return int(ivalue)


def _attention_handle(inputs: List[Any], outputs: List[Any]) -> int:
    # (q, k, v, window, dilation, scale, mask_padding)
    return local_attention_flops(
        _shape(inputs[0], 'q'), _shape(inputs[1], 'k'),
        _shape(inputs[2], 'v'), _const(inputs[3], 'window'))


def _correlation_handle(inputs: List[Any], outputs: List[Any]) -> int:
    # (q, k, window, dilation)
    return local_correlation_flops(
        _shape(inputs[0], 'q'), _shape(inputs[1], 'k'),
        _const(inputs[2], 'window'))


def _aggregation_handle(inputs: List[Any], outputs: List[Any]) -> int:
    # (attn, v, window, dilation)
    return local_aggregation_flops(
        _shape(inputs[0], 'attn'), _shape(inputs[1], 'v'))


#: op name in a ``torch.jit.trace`` graph -> mmengine FlopAnalyzer handle;
#: use ``analyzer.set_op_handle(**FLOP_HANDLES)``.
FLOP_HANDLES = {
    'lma::local_attention_forward': _attention_handle,
    'lma::local_correlation_forward': _correlation_handle,
    'lma::local_aggregation_forward': _aggregation_handle,
}
