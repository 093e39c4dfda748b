"""Local attention ops: compiled CPU kernels against the PyTorch reference."""
import itertools

import pytest
import torch
from torch.autograd import gradcheck

from helpers.op_inputs import _ids, make_inputs, random_shapes
from lma_mmseg.ops import (ext_has_cuda, local_aggregation,
                           local_aggregation_reference, local_attention,
                           local_attention_reference, local_attention_unfused,
                           local_correlation, local_correlation_reference)

PADDINGS = ('zeros', 'mask')


def brute_force_attention(q, k, v, window, dilation, scale, padding):
    """Loop-by-loop definition of the op, to check the reference itself."""
    B, C, H, W = q.shape
    T, Cv = k.shape[1], v.shape[2]
    r = window // 2
    out = torch.zeros(B, Cv, H, W, dtype=q.dtype)
    for b, y, x in itertools.product(range(B), range(H), range(W)):
        logits, values = [], []
        for t, i, j in itertools.product(range(T), range(window),
                                         range(window)):
            yy, xx = y + (i - r) * dilation, x + (j - r) * dilation
            if 0 <= yy < H and 0 <= xx < W:
                logits.append(
                    scale * (q[b, :, y, x] * k[b, t, :, yy, xx]).sum())
                values.append(v[b, t, :, yy, xx])
            elif padding == 'zeros':
                logits.append(torch.zeros((), dtype=q.dtype))
                values.append(torch.zeros(Cv, dtype=q.dtype))
        p = torch.stack(logits).softmax(0)
        out[b, :, y, x] = (p[:, None] * torch.stack(values)).sum(0)
    return out


def non_contiguous(x):
    """Same values, other strides (a transposed copy seen back)."""
    y = x.detach().transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not y.is_contiguous() or y.shape[-1] == 1 or y.shape[-2] == 1
    return y.requires_grad_(x.requires_grad)


# ----------------------------------------------------------------------
# the reference is what the op says it is
# ----------------------------------------------------------------------
@pytest.mark.parametrize('padding', PADDINGS)
@pytest.mark.parametrize('window,dilation,H,W', [(3, 1, 4, 5), (5, 2, 3, 6),
                                                 (7, 1, 2, 3), (1, 1, 3, 3)])
def test_reference_matches_brute_force(padding, window, dilation, H, W):
    q, k, v = make_inputs(2, 3, 4, 2, H, W, dtype=torch.float64)
    ref = local_attention_reference(q, k, v, window, dilation, 0.7, padding)
    bf = brute_force_attention(q, k, v, window, dilation, 0.7, padding)
    torch.testing.assert_close(ref, bf, rtol=0, atol=1e-12)


def test_zeros_and_mask_padding_differ_only_near_borders():
    q, k, v = make_inputs(1, 4, 3, 2, 9, 9)
    zeros = local_attention(q, k, v, window=3, padding='zeros')
    mask = local_attention(q, k, v, window=3, padding='mask')
    # interior pixels have no outside slot: both paddings agree there
    torch.testing.assert_close(zeros[..., 1:-1, 1:-1], mask[..., 1:-1, 1:-1],
                               rtol=0, atol=1e-6)
    assert (zeros[..., 0, :] - mask[..., 0, :]).abs().max() > 1e-3


# ----------------------------------------------------------------------
# compiled kernels vs the reference, float32 on CPU, |err| <= 1e-5
# ----------------------------------------------------------------------
FIXED_SHAPES = [
    # B, C, Cv, T, H, W, window, dilation
    (1, 1, 1, 1, 1, 1, 1, 1),  # 1x1 map, 1x1 window
    (1, 3, 2, 2, 1, 1, 21, 1),  # 1x1 map, window much larger
    (2, 4, 7, 3, 5, 6, 3, 1),
    (1, 16, 64, 3, 12, 23, 21, 1),  # the ERFNet setting, small map
    (2, 3, 5, 2, 9, 40, 5, 3),
    (1, 5, 3, 4, 3, 2, 7, 2),  # H and W smaller than the window
    (3, 2, 9, 5, 4, 17, 9, 1),
    (1, 9, 70, 1, 6, 19, 5, 2),  # channels not a multiple of a vector
    (2, 8, 33, 2, 11, 3, 11, 3),
]


SHAPES = FIXED_SHAPES + random_shapes(16)


@pytest.mark.parametrize('shape', SHAPES, ids=_ids(SHAPES))
def test_attention_matches_reference(shape):
    B, C, Cv, T, H, W, window, dilation = shape
    q, k, v = make_inputs(B, C, Cv, T, H, W, seed=sum(shape))
    # keep the logits O(1..10) so float32 rounding stays well below 1e-5
    scale = 1.0 / max(C, 1)**0.5
    for padding in PADDINGS:
        out = local_attention(q, k, v, window, dilation, scale, padding)
        ref = local_attention_reference(q, k, v, window, dilation, scale,
                                        padding)
        assert out.shape == (B, Cv, H, W)
        err = (out - ref).abs().max().item()
        assert err <= 1e-5, f'{padding}: max abs error {err}'


@pytest.mark.parametrize('shape', SHAPES, ids=_ids(SHAPES))
def test_correlation_and_aggregation_match_reference(shape):
    B, C, Cv, T, H, W, window, dilation = shape
    q, k, v = make_inputs(B, min(C, 8), Cv, T, H, W, seed=sum(shape))
    corr = local_correlation(q, k, window, dilation)
    ref = local_correlation_reference(q, k, window, dilation)
    assert corr.shape == (B, T, window * window, H, W)
    assert (corr - ref).abs().max().item() <= 1e-5
    attn = torch.randn(B, T * window * window, H, W).softmax(1).view(
        B, T, window * window, H, W)
    out = local_aggregation(attn, v, window, dilation)
    ref = local_aggregation_reference(attn, v, window, dilation)
    assert out.shape == (B, Cv, H, W)
    assert (out - ref).abs().max().item() <= 1e-5


def test_erfnet_shape_matches_reference():
    """The paper's ERFNet setting (C=16, Cv=64, T=3, window 21 at 1/8 of
    the frame) on a 12x24 crop (wider than the window: interior columns).

    The logits are unscaled (std ~4), so a float32 reference is itself
    ~1e-4 off: the op is held to the float64 reference of the same inputs.
    """
    q, k, v = make_inputs(1, 16, 64, 3, 12, 24, seed=3)
    for padding in PADDINGS:
        out = local_attention(q, k, v, 21, 1, 1.0, padding)
        ref = local_attention_reference(q.double(), k.double(), v.double(),
                                        21, 1, 1.0, padding)
        assert (out.double() - ref).abs().max().item() <= 1e-5


def test_non_contiguous_inputs():
    q, k, v = make_inputs(2, 5, 6, 3, 7, 9, seed=7)
    qn, kn, vn = map(non_contiguous, (q, k, v))
    assert not (qn.is_contiguous() or kn.is_contiguous()
                or vn.is_contiguous())
    for padding in PADDINGS:
        torch.testing.assert_close(
            local_attention(qn, kn, vn, 5, 2, 0.5, padding),
            local_attention_reference(q, k, v, 5, 2, 0.5, padding),
            rtol=0, atol=1e-5)
    # views with a stride in the batch/frame dims as well
    big_k = torch.randn(2, 6, 5, 7, 9)
    k2 = big_k[:, ::2]
    torch.testing.assert_close(
        local_correlation(q, k2, 3, 1),
        local_correlation_reference(q, k2.contiguous(), 3, 1),
        rtol=0, atol=1e-5)
    attn = torch.rand(2, 3, 9, 9, 7).transpose(-1, -2)
    torch.testing.assert_close(
        local_aggregation(attn, vn, 3, 1),
        local_aggregation_reference(attn.contiguous(), v, 3, 1),
        rtol=0, atol=1e-5)


def test_float64_matches_reference():
    q, k, v = make_inputs(1, 4, 5, 2, 6, 7, dtype=torch.float64)
    for padding in PADDINGS:
        out = local_attention(q, k, v, 5, 1, 1.0, padding)
        assert out.dtype == torch.float64
        ref = local_attention_reference(q, k, v, 5, 1, 1.0, padding)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_softmax_is_joint_over_frames():
    """One softmax over all T * S slots, not one per memory frame."""
    q = torch.ones(1, 1, 1, 1)
    k = torch.tensor([0.0, 2.0]).view(1, 2, 1, 1, 1)
    v = torch.tensor([1.0, 3.0]).view(1, 2, 1, 1, 1)
    out = local_attention(q, k, v, window=1)
    w = torch.tensor([0.0, 2.0]).softmax(0)
    assert out.item() == pytest.approx((w * torch.tensor([1.0, 3.0])).sum())


# ----------------------------------------------------------------------
# gradients
# ----------------------------------------------------------------------
GRAD_SHAPES = [
    # B, C, Cv, T, H, W, window, dilation
    (2, 2, 3, 2, 3, 4, 3, 1),
    (1, 2, 9, 2, 3, 4, 5, 2),  # window larger than the map
    (1, 1, 1, 1, 1, 1, 1, 1),
    (1, 2, 3, 1, 5, 3, 3, 3),
]


@pytest.mark.parametrize('shape', GRAD_SHAPES, ids=_ids(GRAD_SHAPES))
@pytest.mark.parametrize('padding', PADDINGS)
def test_attention_gradcheck(shape, padding):
    B, C, Cv, T, H, W, window, dilation = shape
    q, k, v = make_inputs(B, C, Cv, T, H, W, torch.float64,
                          requires_grad=True)
    assert gradcheck(
        lambda q, k, v: local_attention(q, k, v, window, dilation, 0.7,
                                        padding), (q, k, v))


@pytest.mark.parametrize('shape', GRAD_SHAPES, ids=_ids(GRAD_SHAPES))
def test_correlation_and_aggregation_gradcheck(shape):
    B, C, Cv, T, H, W, window, dilation = shape
    q, k, v = make_inputs(B, C, Cv, T, H, W, torch.float64,
                          requires_grad=True)
    assert gradcheck(lambda q, k: local_correlation(q, k, window, dilation),
                     (q, k))
    attn = torch.randn(B, T, window * window, H, W, dtype=torch.float64,
                       requires_grad=True)
    assert gradcheck(lambda a, v: local_aggregation(a, v, window, dilation),
                     (attn, v))


@pytest.mark.parametrize('padding', PADDINGS)
def test_attention_gradients_match_reference_float32(padding):
    q, k, v = make_inputs(2, 8, 16, 3, 13, 29, seed=5, requires_grad=True)
    grad_out = torch.randn(2, 16, 13, 29)
    grads = torch.autograd.grad(
        local_attention(q, k, v, 7, 2, 0.5, padding), (q, k, v), grad_out)
    refs = torch.autograd.grad(
        local_attention_reference(q, k, v, 7, 2, 0.5, padding), (q, k, v),
        grad_out)
    for name, g, r in zip('qkv', grads, refs):
        err = (g - r).abs().max().item()
        assert err <= 1e-4 * max(1.0, r.abs().max().item()), (name, err)


def test_gradients_of_non_contiguous_inputs():
    q, k, v = make_inputs(1, 3, 4, 2, 5, 6, torch.float64,
                          requires_grad=True)
    qn, kn, vn = (non_contiguous(x) for x in (q, k, v))
    grads = torch.autograd.grad(local_attention(qn, kn, vn, 3).sum(),
                                (qn, kn, vn))
    refs = torch.autograd.grad(local_attention_reference(q, k, v, 3).sum(),
                               (q, k, v))
    for g, r in zip(grads, refs):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------
def _good():
    return make_inputs(2, 4, 6, 3, 5, 7)


@pytest.mark.parametrize(
    'change,match',
    [
        (dict(window=4), 'window must be an odd int'),
        (dict(window=0), 'window must be an odd int'),
        (dict(window=3.0), 'window must be an odd int'),
        (dict(dilation=0), 'dilation must be an int >= 1'),
        (dict(dilation=-2), 'dilation must be an int >= 1'),
        (dict(padding='reflect'), 'padding must be one of'),
        (dict(scale=float('nan')), 'scale must be finite'),
        (dict(scale='1'), 'scale must be a real number'),
    ])
def test_bad_arguments(change, match):
    q, k, v = _good()
    kwargs = dict(window=3, dilation=1, scale=1.0, padding='zeros')
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        local_attention(q, k, v, **kwargs)
    with pytest.raises(ValueError, match=match):
        local_attention_reference(q, k, v, **kwargs)


def test_bad_shapes():
    q, k, v = _good()
    cases = [
        ((q[0], k, v), r'q must be a 4-D tensor.*\(4, 5, 7\)'),
        ((q, k[:, 0], v), r'k must be a 5-D tensor'),
        ((q, k[:, :0], v[:, :0]), r'number of memory frames T .* >= 1'),
        ((q, k[:, :, :3], v), r'k must have shape \(B, T, C, H, W\).*'
         r'\(2, 4, 5, 7\).*\(2, 3, 3, 5, 7\)'),
        ((q, k[:1], v), r'k must have shape'),
        ((q, k[..., :4], v), r'k must have shape'),
        ((q, k, v[:, :2]), r'v must have shape \(B, T, Cv, H, W\).*'
         r'\(2, 2, 6, 5, 7\)'),
        ((q, k, v[..., :6]), r'v must have shape'),
        ((q, k.double(), v), r'q and k must have the same dtype'),
        ((q, k, v.double()), r'q and v must have the same dtype'),
        ((q.half(), k.half(), v.half()), r'CPU supports'),
        ((q.long(), k, v), r'floating point'),
        ((q[:, :0], k[:, :, :0], v), r'every size of q must be positive'),
        ((q.numpy(), k, v), r'q must be a torch.Tensor'),
    ]
    for args, match in cases:
        with pytest.raises(ValueError, match=match):
            local_attention(*args, window=3)
    with pytest.raises(ValueError, match='same device'):
        local_attention(q, k.to('meta'), v, window=3)


def test_bad_correlation_and_aggregation_inputs():
    q, k, v = _good()
    with pytest.raises(ValueError, match='window must be an odd int'):
        local_correlation(q, k, window=2)
    with pytest.raises(ValueError, match='k must have shape'):
        local_correlation(q, k[:, :, :1], window=3)
    attn = torch.rand(2, 3, 9, 5, 7)
    with pytest.raises(ValueError, match=r'window \* window = 25 slots'):
        local_aggregation(attn, v, window=5)
    with pytest.raises(ValueError, match='v must have shape'):
        local_aggregation(attn, v[:, :1], window=3)
    with pytest.raises(ValueError, match='T \\(dim 1 of attn\\)'):
        local_aggregation(attn[:, :0], v[:, :0], window=3)
    with pytest.raises(ValueError, match='dilation must be an int >= 1'):
        local_aggregation(attn, v, window=3, dilation=0)


# ----------------------------------------------------------------------
# a CUDA tensor with a CPU-only build
# ----------------------------------------------------------------------
def test_cuda_tensor_with_cpu_only_build_raises_rebuild_hint():
    if ext_has_cuda():
        pytest.skip('this build of lma_mmseg._ext has CUDA kernels')
    # the registered ops have CPU kernels only in this build
    for name in ('local_attention_forward', 'local_attention_backward',
                 'local_correlation_forward', 'local_correlation_backward',
                 'local_aggregation_forward', 'local_aggregation_backward'):
        qualname = f'lma::{name}'
        assert torch._C._dispatch_has_kernel_for_dispatch_key(
            qualname, 'CPU'), qualname
        assert not torch._C._dispatch_has_kernel_for_dispatch_key(
            qualname, 'CUDA'), qualname
    if not torch.cuda.is_available():
        pytest.skip('no CUDA device to build a CUDA tensor on')
    q, k, v = (x.cuda() for x in _good())
    for fn in (lambda: local_attention(q, k, v, window=3),
               lambda: local_correlation(q, k, window=3)):
        with pytest.raises(RuntimeError, match='FORCE_CUDA=1'):
            fn()


# ----------------------------------------------------------------------
# position bias (T, window * window)
# ----------------------------------------------------------------------
BIAS_SHAPES = FIXED_SHAPES[1:] + random_shapes(10, seed=99)


@pytest.mark.parametrize('shape', BIAS_SHAPES, ids=_ids(BIAS_SHAPES))
def test_attention_with_bias_matches_reference(shape):
    """Fused op and unfused path with a bias, float32, |err| <= 1e-5."""
    B, C, Cv, T, H, W, window, dilation = shape
    q, k, v = make_inputs(B, C, Cv, T, H, W, seed=sum(shape))
    bias = torch.randn(T, window * window,
                       generator=torch.Generator().manual_seed(len(shape)))
    scale = 1.0 / max(C, 1)**0.5
    for padding in PADDINGS:
        ref = local_attention_reference(q.double(), k.double(), v.double(),
                                        window, dilation, scale, padding,
                                        bias=bias.double())
        for fn in (local_attention, local_attention_unfused):
            out = fn(q, k, v, window, dilation, scale, padding, bias=bias)
            assert out.dtype == torch.float32
            err = (out.double() - ref).abs().max().item()
            assert err <= 1e-5, f'{fn.__name__} {padding}: error {err}'


def test_bias_enters_every_slot_before_the_joint_softmax():
    """Loop-by-loop check: outside slots take logit bias[t, s] under
    padding='zeros' (value 0) and stay out under 'mask'."""
    q, k, v = make_inputs(1, 2, 3, 2, 3, 4, dtype=torch.float64, seed=4)
    bias = torch.randn(2, 9, dtype=torch.float64)
    for padding in PADDINGS:
        out = local_attention(q, k, v, 3, 1, 0.5, padding, bias=bias)
        expected = torch.zeros_like(out)
        for y, x in itertools.product(range(3), range(4)):
            logits, values = [], []
            for t, i, j in itertools.product(range(2), range(3), range(3)):
                yy, xx = y + i - 1, x + j - 1
                inside = 0 <= yy < 3 and 0 <= xx < 4
                if not inside and padding == 'mask':
                    continue
                corr = (q[0, :, y, x] * k[0, t, :, yy, xx]).sum() \
                    if inside else torch.zeros((), dtype=torch.float64)
                logits.append(0.5 * corr + bias[t, i * 3 + j])
                values.append(v[0, t, :, yy, xx] if inside else
                              torch.zeros(3, dtype=torch.float64))
            p = torch.stack(logits).softmax(0)
            expected[0, :, y, x] = (p[:, None] * torch.stack(values)).sum(0)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize('padding', PADDINGS)
@pytest.mark.parametrize('shape', GRAD_SHAPES, ids=_ids(GRAD_SHAPES))
def test_attention_with_bias_gradcheck(shape, padding):
    B, C, Cv, T, H, W, window, dilation = shape
    q, k, v = make_inputs(B, C, Cv, T, H, W, torch.float64,
                          requires_grad=True)
    bias = torch.randn(T, window * window, dtype=torch.float64,
                       requires_grad=True)
    assert gradcheck(
        lambda q, k, v, b: local_attention(q, k, v, window, dilation, 0.7,
                                           padding, bias=b), (q, k, v, bias))


def test_bias_gradient_sums_over_batch_and_pixels():
    q, k, v = make_inputs(2, 3, 4, 2, 5, 6, seed=8)
    bias = torch.zeros(2, 9, requires_grad=True)
    grad_out = torch.randn(2, 4, 5, 6)
    local_attention(q, k, v, 3, 1, 1.0, 'zeros', bias=bias).backward(grad_out)
    per_image = []
    for b in range(2):
        bb = bias.detach().clone().requires_grad_()
        local_attention(q[b:b + 1], k[b:b + 1], v[b:b + 1], 3, 1, 1.0,
                        'zeros', bias=bb).backward(grad_out[b:b + 1])
        per_image.append(bb.grad)
    torch.testing.assert_close(bias.grad, per_image[0] + per_image[1],
                               rtol=0, atol=1e-5)


def test_zero_bias_equals_no_bias_and_scale_zero_learns_the_bias():
    q, k, v = make_inputs(1, 4, 5, 3, 6, 7, seed=9)
    for padding in PADDINGS:
        torch.testing.assert_close(
            local_attention(q, k, v, 5, 1, 0.5, padding,
                            bias=torch.zeros(3, 25)),
            local_attention(q, k, v, 5, 1, 0.5, padding), rtol=0, atol=1e-6)
    # scale 0: the logits are the bias alone, its gradient is still exact
    q, k, v = make_inputs(1, 2, 3, 2, 4, 5, torch.float64)
    bias = torch.randn(2, 9, dtype=torch.float64, requires_grad=True)
    assert gradcheck(
        lambda b: local_attention(q, k, v, 3, 1, 0.0, 'zeros', bias=b),
        (bias, ))


def test_bad_bias():
    q, k, v = _good()
    with pytest.raises(ValueError, match=r'bias must have shape \(T, window'
                       r' \* window\) = \(3, 9\)'):
        local_attention(q, k, v, window=3, bias=torch.zeros(3, 25))
    with pytest.raises(ValueError, match='q and bias must have the same '
                       'dtype'):
        local_attention(q, k, v, window=3,
                        bias=torch.zeros(3, 9, dtype=torch.float64))
    with pytest.raises(ValueError, match='bias must be a torch.Tensor'):
        local_attention(q, k, v, window=3, bias=[0.0] * 27)
    with pytest.raises(ValueError, match='bias must have shape'):
        local_attention_reference(q, k, v, window=3, bias=torch.zeros(9))
