"""The peers of the op (lma_mmseg.benchmarks.peers) give the op's output
on small random problems, with both paddings."""
import math

import pytest
import torch

from lma_mmseg.benchmarks.peers import (DenseMaskAttention, FlexLocalAttention,
                                        flex_attention_available,
                                        outside_logits, plain_attention,
                                        window_offsets_ok)
from lma_mmseg.ops import local_attention, local_attention_reference

FLEX, NO_FLEX = flex_attention_available()


def inputs(B=2, C=3, Cv=4, T=2, H=5, W=9, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, C, H, W, generator=g, dtype=dtype),
            torch.randn(B, T, C, H, W, generator=g, dtype=dtype),
            torch.randn(B, T, Cv, H, W, generator=g, dtype=dtype))


def peers(H, W, T, window, dilation, scale, padding):
    args = (H, W, T, window, dilation, scale, padding)
    out = dict(
        plain=lambda q, k, v: plain_attention(q, k, v, *args[3:]),
        sdpa=DenseMaskAttention(*args, dtype=torch.float64))
    if FLEX:
        # eager here; the benchmark compiles it (same masks, same scores)
        out['flex'] = FlexLocalAttention(*args, compiled=False)
    return out


@pytest.mark.parametrize('padding', ['zeros', 'mask'])
@pytest.mark.parametrize('window,dilation', [(3, 1), (5, 2)])
def test_peers_match_the_op(padding, window, dilation):
    q, k, v = inputs()
    T, H, W = k.shape[1], k.shape[3], k.shape[4]
    expected = local_attention(q, k, v, window, dilation, 0.6, padding)
    torch.testing.assert_close(
        local_attention_reference(q, k, v, window, dilation, 0.6, padding),
        expected, rtol=0, atol=1e-12)
    for name, peer in peers(H, W, T, window, dilation, 0.6,
                            padding).items():
        torch.testing.assert_close(
            peer(q, k, v), expected, rtol=0, atol=1e-12, msg=name)


def test_peers_match_the_op_where_the_window_exceeds_the_map():
    """window 7 on a 3x4 map: every position has outside slots."""
    q, k, v = inputs(B=1, T=3, H=3, W=4, seed=3)
    for padding in ('zeros', 'mask'):
        expected = local_attention(q, k, v, 7, 1, 1.0, padding)
        for name, peer in peers(3, 4, 3, 7, 1, 1.0, padding).items():
            torch.testing.assert_close(
                peer(q, k, v), expected, rtol=0, atol=1e-12,
                msg=f'{name} {padding}')


def test_sdpa_gradients_match_the_op():
    q, k, v = inputs(B=1, H=4, W=6, seed=1)
    grad = torch.randn(1, 4, 4, 6, dtype=torch.float64)
    for padding in ('zeros', 'mask'):
        grads = []
        for fn in (lambda *x: local_attention(*x, 3, 1, 1.0, padding),
                   DenseMaskAttention(4, 6, 2, 3, 1, 1.0, padding,
                                      dtype=torch.float64)):
            x = [t.clone().requires_grad_() for t in (q, k, v)]
            fn(*x).backward(grad)
            grads.append([t.grad for t in x])
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_outside_logits_by_hand():
    # 3x3 map, 3x3 window, 2 frames: a corner sees 5 outside positions per
    # frame, an edge 3, the centre none
    logits = outside_logits(3, 3, 2, 3, 1).view(3, 3)
    assert logits[0, 0] == pytest.approx(math.log(10))
    assert logits[0, 1] == pytest.approx(math.log(6))
    assert logits[1, 1] == float('-inf')
    ok = window_offsets_ok(5, 3, 2)
    assert ok[2].tolist() == [True, False, True, False, True]


def test_dense_mask_shapes_and_errors():
    zeros = DenseMaskAttention(4, 5, 2, 3, padding='zeros')
    mask = DenseMaskAttention(4, 5, 2, 3, padding='mask')
    assert zeros.mask.shape == (20, 41) and zeros.num_keys == 41
    assert mask.mask.shape == (20, 40) and mask.mask.dtype == torch.bool
    # the centre query sees 3x3 positions in each frame
    assert int(mask.mask[1 * 5 + 2].sum()) == 2 * 9
    q, k, v = inputs(B=1, T=2, H=4, W=6, dtype=torch.float32)
    with pytest.raises(ValueError, match=r'k must be \(B, 2, C, 4, 5\)'):
        zeros(q, k, v)
    with pytest.raises(ValueError, match='padding'):
        DenseMaskAttention(4, 5, 2, 3, padding='reflect')


def test_flex_attention_is_there_or_says_why():
    assert FLEX or 'flex_attention' in NO_FLEX
