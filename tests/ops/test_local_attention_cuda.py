"""CUDA kernels of the local attention ops against the reference and CPU.

Every test needs a CUDA device and a build of ``lma_mmseg._ext`` with the
CUDA kernels (``FORCE_CUDA=1 python setup.py build_ext --inplace``); without
a device they are skipped.
"""
import pytest
import torch

from lma_mmseg.ops import (local_aggregation, local_aggregation_reference,
                           local_attention, local_attention_reference,
                           local_correlation, local_correlation_reference)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason='needs a CUDA device'),
]

PADDINGS = ('zeros', 'mask')

# (B, T, C, Cv, H, W, window, dilation)
CASES = [
    (1, 1, 3, 5, 1, 1, 3, 1),  # 1x1 map
    (2, 2, 4, 6, 5, 7, 3, 1),
    (1, 3, 5, 70, 6, 19, 5, 2),  # two value channel blocks
    (1, 2, 3, 4, 3, 4, 7, 3),  # window larger than the map
    (2, 5, 8, 16, 9, 33, 21, 1),  # paper window, several slot chunks
    (1, 2, 130, 3, 5, 17, 3, 1),  # key channels over several chunks
    (1, 4, 6, 9, 13, 11, 1, 2),  # window 1
    (1, 1, 2, 3, 3, 66, 9, 60),  # dilated beyond the map, column chunks
    (3, 2, 16, 64, 17, 23, 9, 2),  # ERFNet-like channels
]


def _ids(case):
    return 'B{}T{}C{}Cv{}_{}x{}_w{}d{}'.format(*case)


def _inputs(case, dtype=torch.float32, seed=0, device='cuda'):
    """q, k, v with moderate logits (std ~1 after the dot product)."""
    B, T, C, Cv, H, W, _, _ = case
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    k = torch.randn(B, T, C, H, W, generator=g, dtype=torch.float64)
    v = torch.randn(B, T, Cv, H, W, generator=g, dtype=torch.float64)
    q = q / C**0.25
    k = k / C**0.25
    return [x.to(device=device, dtype=dtype) for x in (q, k, v)]


def _close(actual, expected, tol, what):
    """max |actual - expected| <= tol * max(1, max |expected|)."""
    actual = actual.detach().double().cpu()
    expected = expected.detach().double().cpu()
    assert actual.shape == expected.shape, (what, actual.shape,
                                            expected.shape)
    assert torch.isfinite(actual).all(), f'{what}: non-finite values'
    err = (actual - expected).abs().max().item()
    bound = tol * max(1.0, expected.abs().max().item())
    assert err <= bound, f'{what}: max abs error {err:.3g} > {bound:.3g}'


def _attention_with_grads(fn, q, k, v, grad_out, **kwargs):
    q, k, v = [x.detach().clone().requires_grad_() for x in (q, k, v)]
    out = fn(q, k, v, **kwargs)
    out.backward(grad_out)
    return out.detach(), q.grad, k.grad, v.grad


def test_extension_has_cuda_kernels():
    from lma_mmseg import _ext
    assert _ext.with_cuda(), (
        'lma_mmseg._ext was built without CUDA kernels; rebuild it with '
        '`FORCE_CUDA=1 python setup.py build_ext --inplace`')


@pytest.mark.parametrize('padding', PADDINGS)
@pytest.mark.parametrize('case', CASES, ids=_ids)
def test_attention_float32_matches_reference_and_cpu(case, padding):
    window, dilation = case[6], case[7]
    kwargs = dict(window=window, dilation=dilation, scale=0.7,
                  padding=padding)
    q, k, v = _inputs(case, torch.float32)
    grad_out = torch.randn(
        case[0], case[3], case[4], case[5], device='cuda',
        generator=torch.Generator('cuda').manual_seed(1))
    got = _attention_with_grads(local_attention, q, k, v, grad_out, **kwargs)
    ref = _attention_with_grads(local_attention_reference, q.double(),
                                k.double(), v.double(), grad_out.double(),
                                **kwargs)
    cpu = _attention_with_grads(local_attention, q.cpu(), k.cpu(), v.cpu(),
                                grad_out.cpu(), **kwargs)
    for name, a, r, c in zip(('out', 'grad_q', 'grad_k', 'grad_v'), got, ref,
                             cpu):
        assert a.dtype == torch.float32 and a.is_cuda
        _close(a, r, 2e-5, f'{name} vs reference')
        _close(a, c, 2e-5, f'{name} vs CPU')


@pytest.mark.parametrize('case', CASES, ids=_ids)
def test_correlation_matches_reference_and_cpu(case):
    window, dilation = case[6], case[7]
    q, k, _ = _inputs(case, torch.float32)
    B, T, _, _, H, W = case[:6]
    grad = torch.randn(B, T, window * window, H, W, device='cuda')
    results = []
    for fn, dev, dt in ((local_correlation, 'cuda', torch.float32),
                        (local_correlation_reference, 'cuda', torch.float64),
                        (local_correlation, 'cpu', torch.float32)):
        qq = q.to(dev, dt).requires_grad_()
        kk = k.to(dev, dt).requires_grad_()
        corr = fn(qq, kk, window, dilation)
        corr.backward(grad.to(dev, dt))
        results.append((corr.detach(), qq.grad, kk.grad))
    got, ref, cpu = results
    for name, a, r, c in zip(('corr', 'grad_q', 'grad_k'), got, ref, cpu):
        _close(a, r, 1e-5, f'{name} vs reference')
        _close(a, c, 1e-5, f'{name} vs CPU')


@pytest.mark.parametrize('case', CASES, ids=_ids)
def test_aggregation_matches_reference_and_cpu(case):
    B, T, _, Cv, H, W, window, dilation = case
    _, _, v = _inputs(case, torch.float32)
    attn = torch.randn(B, T, window * window, H, W, device='cuda')
    grad = torch.randn(B, Cv, H, W, device='cuda')
    results = []
    for fn, dev, dt in ((local_aggregation, 'cuda', torch.float32),
                        (local_aggregation_reference, 'cuda', torch.float64),
                        (local_aggregation, 'cpu', torch.float32)):
        aa = attn.to(dev, dt).requires_grad_()
        vv = v.to(dev, dt).requires_grad_()
        out = fn(aa, vv, window, dilation)
        out.backward(grad.to(dev, dt))
        results.append((out.detach(), aa.grad, vv.grad))
    got, ref, cpu = results
    for name, a, r, c in zip(('out', 'grad_attn', 'grad_v'), got, ref, cpu):
        _close(a, r, 1e-5, f'{name} vs reference')
        _close(a, c, 1e-5, f'{name} vs CPU')


@pytest.mark.parametrize('padding', PADDINGS)
def test_random_shapes_match_reference(padding):
    """Random B, T (1..5), C, Cv, H, W (1..24), window and dilation (1..3)."""
    rng = torch.Generator().manual_seed(123)

    def pick(lo, hi):
        return int(torch.randint(lo, hi + 1, (1, ), generator=rng))

    for trial in range(12):
        window = 2 * pick(0, 6) + 1
        case = (pick(1, 2), pick(1, 5), pick(1, 40), pick(1, 80), pick(1, 24),
                pick(1, 24), window, pick(1, 3))
        q, k, v = _inputs(case, torch.float32, seed=trial)
        grad_out = torch.randn(case[0], case[3], case[4], case[5],
                               device='cuda')
        kwargs = dict(window=case[6], dilation=case[7], scale=1.0,
                      padding=padding)
        got = _attention_with_grads(local_attention, q, k, v, grad_out,
                                    **kwargs)
        ref = _attention_with_grads(local_attention_reference, q.double(),
                                    k.double(), v.double(),
                                    grad_out.double(), **kwargs)
        for name, a, r in zip(('out', 'grad_q', 'grad_k', 'grad_v'), got,
                              ref):
            _close(a, r, 2e-5, f'{name} for {_ids(case)}')


@pytest.mark.parametrize('dtype,tol', [(torch.float16, 1e-2),
                                       (torch.bfloat16, 4e-2)])
@pytest.mark.parametrize('padding', PADDINGS)
def test_half_types_match_float32_reference(dtype, tol, padding):
    for case in (CASES[1], CASES[3], CASES[4], CASES[8]):
        window, dilation = case[6], case[7]
        kwargs = dict(window=window, dilation=dilation, scale=1.0,
                      padding=padding)
        q, k, v = _inputs(case, dtype)
        grad_out = torch.randn(
            case[0], case[3], case[4], case[5], device='cuda').to(dtype)
        got = _attention_with_grads(local_attention, q, k, v, grad_out,
                                    **kwargs)
        # reference in float32 on the same (rounded) inputs
        ref = _attention_with_grads(local_attention_reference, q.float(),
                                    k.float(), v.float(), grad_out.float(),
                                    **kwargs)
        for name, a, r in zip(('out', 'grad_q', 'grad_k', 'grad_v'), got,
                              ref):
            assert a.dtype == dtype
            _close(a, r, tol, f'{dtype} {name} for {_ids(case)}')
        corr = local_correlation(q, k, window, dilation)
        assert corr.dtype == dtype
        _close(corr, local_correlation_reference(q.float(), k.float(),
                                                 window, dilation), tol,
               f'{dtype} corr for {_ids(case)}')
        attn = torch.softmax(corr.float().flatten(1, 2), 1).view_as(corr)
        out = local_aggregation(attn.to(dtype), v, window, dilation)
        assert out.dtype == dtype
        _close(out, local_aggregation_reference(
            attn.to(dtype).float(), v.float(), window, dilation), tol,
               f'{dtype} aggregation for {_ids(case)}')


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16,
                                   torch.bfloat16])
@pytest.mark.parametrize('padding', PADDINGS)
def test_forward_log_sum_exp(dtype, padding):
    """The fused forward keeps a float32 log-sum-exp per query pixel."""
    from lma_mmseg import _ext
    case = CASES[2]
    B, T, C, Cv, H, W, window, dilation = case
    q, k, v = _inputs(case, dtype)
    out, lse = _ext.local_attention_forward(q, k, v, window, dilation, 0.5,
                                            padding == 'mask')
    assert out.shape == (B, Cv, H, W) and out.dtype == dtype
    assert lse.shape == (B, H, W) and lse.dtype == torch.float32
    logits = 0.5 * local_correlation_reference(q.double(), k.double(),
                                               window, dilation)
    if padding == 'mask':
        ones = torch.ones(1, 1, 1, H, W, device='cuda', dtype=torch.float64)
        inside = local_correlation_reference(ones[:, 0], ones, window,
                                             dilation) > 0.5
        logits = logits.masked_fill(~inside, float('-inf'))
    expected = logits.flatten(1, 2).logsumexp(1)
    _close(lse, expected, 1e-5 if dtype == torch.float32 else 1e-4, 'lse')


def test_non_contiguous_inputs():
    case = (2, 3, 6, 10, 9, 12, 5, 2)
    B, T, C, Cv, H, W, window, dilation = case
    q, k, v = _inputs(case, torch.float32)
    # same values, other strides
    q_nc = q.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    k_nc = k.transpose(1, 2).contiguous().transpose(1, 2)
    v_wide = torch.zeros(B, T, Cv, H, 2 * W, device='cuda')
    v_wide[..., ::2] = v
    v_nc = v_wide[..., ::2]
    assert not (q_nc.is_contiguous() or k_nc.is_contiguous()
                or v_nc.is_contiguous())
    grad_out = torch.randn(B, Cv, H, W, device='cuda').transpose(2, 3)
    grad_out = grad_out.contiguous().transpose(2, 3)
    for padding in PADDINGS:
        kwargs = dict(window=window, dilation=dilation, padding=padding)
        got = _attention_with_grads(local_attention, q_nc, k_nc, v_nc,
                                    grad_out, **kwargs)
        ref = _attention_with_grads(local_attention, q, k, v,
                                    grad_out.contiguous(), **kwargs)
        for name, a, r in zip(('out', 'grad_q', 'grad_k', 'grad_v'), got,
                              ref):
            _close(a, r, 1e-6, f'non-contiguous {name} ({padding})')
    corr = local_correlation(q_nc, k_nc, window, dilation)
    _close(corr, local_correlation(q, k, window, dilation), 1e-6, 'corr')
    attn = torch.rand(B, T, window * window, W, H,
                      device='cuda').transpose(3, 4)
    _close(local_aggregation(attn, v_nc, window, dilation),
           local_aggregation(attn.contiguous(), v, window, dilation), 1e-6,
           'aggregation')


def test_large_value_channels_and_paper_window():
    """Cv = 2048 (PSPNet raw features) with a 21x21 window."""
    case = (1, 2, 128, 2048, 5, 9, 21, 1)
    B, T, C, Cv, H, W, window, dilation = case
    q, k, v = _inputs(case, torch.float32)
    grad_out = torch.randn(B, Cv, H, W, device='cuda')
    got = _attention_with_grads(local_attention, q, k, v, grad_out,
                                window=window, dilation=dilation)
    ref = _attention_with_grads(local_attention_reference, q, k, v, grad_out,
                                window=window, dilation=dilation)
    for name, a, r in zip(('out', 'grad_q', 'grad_k', 'grad_v'), got, ref):
        _close(a, r, 1e-4, f'{name} with Cv=2048')


def test_backward_is_deterministic():
    """No atomics: two backward passes give bit-identical gradients."""
    case = CASES[4]
    q, k, v = _inputs(case, torch.float32)
    grad_out = torch.randn(case[0], case[3], case[4], case[5], device='cuda')
    first = _attention_with_grads(local_attention, q, k, v, grad_out,
                                  window=case[6], dilation=case[7])
    second = _attention_with_grads(local_attention, q, k, v, grad_out,
                                   window=case[6], dilation=case[7])
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize('padding', PADDINGS)
@pytest.mark.parametrize('case', [(1, 2, 3, 2, 4, 5, 3, 2),
                                  (2, 1, 2, 3, 3, 3, 5, 1)],
                         ids=_ids)
def test_gradcheck_float64(case, padding):
    B, T, C, Cv, H, W, window, dilation = case
    q, k, v = _inputs(case, torch.float64)
    q, k, v = [x.requires_grad_() for x in (q, k, v)]
    assert torch.autograd.gradcheck(
        lambda q, k, v: local_attention(q, k, v, window, dilation, 0.8,
                                        padding), (q, k, v))
    if padding == 'mask':
        return  # the unfused ops have no padding mode
    assert torch.autograd.gradcheck(
        lambda q, k: local_correlation(q, k, window, dilation), (q, k))
    attn = torch.rand(B, T, window * window, H, W, device='cuda',
                      dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, v: local_aggregation(a, v, window, dilation), (attn, v))


def test_bad_input_names_the_argument():
    q, k, v = _inputs(CASES[1], torch.float32)
    with pytest.raises((ValueError, RuntimeError), match='device'):
        local_attention(q, k.cpu(), v, window=3)
    with pytest.raises((ValueError, RuntimeError), match='v must have'):
        local_attention(q, k, v[:, :1], window=3)
