"""CUDA kernels of the local attention ops against the reference and CPU.

The tests marked ``cuda`` need a CUDA device and a build of
``lma_mmseg._ext`` with the CUDA kernels (``FORCE_CUDA=1 python setup.py
build_ext --inplace``); without a device they are skipped.

The tests marked ``slow`` run the same CUDA kernels and op bodies on the host
(``lma_mmseg/ops/csrc/cuda/emulation``: a block's threads are coroutines
that run to ``__syncthreads()`` in turn, in ascending and descending order
on alternate barriers; shared memory is poisoned with NaN before every
block), so the index arithmetic, the tiling, the barriers and the launch
plans are checked on machines without a GPU too. They compile a small
operator library with the C++ compiler.
"""
import hashlib
import os.path as osp

import pytest
import torch

from lma_mmseg.ops import (local_aggregation, local_aggregation_reference,
                           local_attention, local_attention_reference,
                           local_attention_unfused, local_correlation,
                           local_correlation_reference)


def requires_cuda(fn):
    """Mark a test ``cuda`` and skip it without a CUDA device."""
    fn = pytest.mark.skipif(
        not torch.cuda.is_available(), reason='needs a CUDA device')(fn)
    return pytest.mark.cuda(fn)


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


@requires_cuda
def test_extension_has_cuda_kernels():
    from lma_mmseg import _ext
    assert _ext.with_cuda(), (
        'lma_mmseg._ext was built without CUDA kernels; rebuild it with '
        '`FORCE_CUDA=1 python setup.py build_ext --inplace`')


@requires_cuda
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
        _close(a, r, 1e-4, f'{name} vs reference')
        _close(a, c, 1e-4, f'{name} vs CPU')


@requires_cuda
@pytest.mark.parametrize('padding', PADDINGS)
@pytest.mark.parametrize('case', CASES, ids=_ids)
def test_lse_output_and_its_gradient_match_reference_and_cpu(case, padding):
    """return_lse on CUDA: the lse and the gradients with both outputs
    used, against the float64 reference and the CPU kernels."""
    window, dilation = case[6], case[7]
    q, k, v = _inputs(case, torch.float32)
    B, H, W = case[0], case[4], case[5]
    g = torch.Generator('cuda').manual_seed(2)
    grad_out = torch.randn(B, case[3], H, W, device='cuda', generator=g)
    grad_lse = torch.randn(B, H, W, device='cuda', generator=g)
    results = []
    for fn, dev, dt in ((local_attention, 'cuda', torch.float32),
                        (local_attention_reference, 'cuda', torch.float64),
                        (local_attention, 'cpu', torch.float32)):
        qkv = [x.detach().to(dev, dt).clone().requires_grad_()
               for x in (q, k, v)]
        out, lse = fn(*qkv, window, dilation, 0.7, padding, return_lse=True)
        torch.autograd.backward(
            (out, lse), (grad_out.to(dev, dt), grad_lse.to(dev, dt)))
        results.append((out.detach(), lse.detach(),
                        *(x.grad for x in qkv)))
    names = ('out', 'lse', 'grad_q', 'grad_k', 'grad_v')
    for name, a, r, c in zip(names, *results):
        assert a.dtype == torch.float32 and a.is_cuda
        _close(a, r, 1e-4, f'{name} vs reference')
        _close(a, c, 1e-4, f'{name} vs CPU')


@requires_cuda
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
        qq = q.detach().to(dev, dt).clone().requires_grad_()
        kk = k.detach().to(dev, dt).clone().requires_grad_()
        corr = fn(qq, kk, window, dilation)
        corr.backward(grad.to(dev, dt))
        results.append((corr.detach(), qq.grad, kk.grad))
    got, ref, cpu = results
    for name, a, r, c in zip(('corr', 'grad_q', 'grad_k'), got, ref, cpu):
        _close(a, r, 1e-5, f'{name} vs reference')
        _close(a, c, 1e-5, f'{name} vs CPU')


@requires_cuda
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
        aa = attn.detach().to(dev, dt).clone().requires_grad_()
        vv = v.detach().to(dev, dt).clone().requires_grad_()
        out = fn(aa, vv, window, dilation)
        out.backward(grad.to(dev, dt))
        results.append((out.detach(), aa.grad, vv.grad))
    got, ref, cpu = results
    for name, a, r, c in zip(('out', 'grad_attn', 'grad_v'), got, ref, cpu):
        _close(a, r, 1e-5, f'{name} vs reference')
        _close(a, c, 1e-5, f'{name} vs CPU')


@requires_cuda
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
            _close(a, r, 1e-4, f'{name} for {_ids(case)}')


@requires_cuda
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


@requires_cuda
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16,
                                   torch.bfloat16])
@pytest.mark.parametrize('padding', PADDINGS)
def test_forward_log_sum_exp(dtype, padding):
    """The fused forward keeps a float32 log-sum-exp per query pixel."""
    case = CASES[2]
    B, T, C, Cv, H, W, window, dilation = case
    q, k, v = _inputs(case, dtype)
    out, lse = torch.ops.lma.local_attention_forward(
        q, k, v, window, dilation, 0.5, padding == 'mask')
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


@requires_cuda
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


@requires_cuda
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


@requires_cuda
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


@requires_cuda
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


@requires_cuda
def test_bad_input_names_the_argument():
    q, k, v = _inputs(CASES[1], torch.float32)
    with pytest.raises((ValueError, RuntimeError), match='device'):
        local_attention(q, k.cpu(), v, window=3)
    with pytest.raises((ValueError, RuntimeError), match='v must have'):
        local_attention(q, k, v[:, :1], window=3)


@requires_cuda
@pytest.mark.parametrize('dtype,tol', [(torch.float16, 1e-2),
                                       (torch.bfloat16, 4e-2)])
@pytest.mark.parametrize('padding', PADDINGS)
def test_autocast_mixed_dtypes(dtype, tol, padding):
    """A half query with float32 memory under CUDA autocast: the op runs in
    the autocast dtype (fused and unfused), backward included."""
    case = CASES[8]
    window, dilation = case[6], case[7]
    q, k, v = _inputs(case, torch.float32)
    grad_out = torch.randn(case[0], case[3], case[4], case[5], device='cuda')
    kwargs = dict(window=window, dilation=dilation, scale=1.0,
                  padding=padding)
    ref = _attention_with_grads(local_attention_reference,
                                q.to(dtype).float(), k.to(dtype).float(),
                                v.to(dtype).float(), grad_out, **kwargs)
    for fn in (local_attention, local_attention_unfused):
        qh = q.to(dtype).requires_grad_()
        kf, vf = (x.clone().requires_grad_() for x in (k, v))
        with torch.autocast('cuda', dtype=dtype):
            out = fn(qh, kf, vf, **kwargs)
        assert out.dtype == dtype
        out.backward(grad_out.to(dtype))
        assert qh.grad.dtype == dtype and kf.grad.dtype == torch.float32
        for name, a, r in zip(('out', 'grad_q', 'grad_k', 'grad_v'),
                              (out, qh.grad, kf.grad, vf.grad), ref):
            _close(a, r, tol, f'autocast {dtype} {fn.__name__} {name}')


@requires_cuda
def test_compiled_forward_backward_equals_eager():
    torch._dynamo.reset()
    case = CASES[8]
    window, dilation = case[6], case[7]
    q, k, v = _inputs(case, torch.float32)
    grad_out = torch.randn(case[0], case[3], case[4], case[5], device='cuda')

    def fn(q, k, v):
        return local_attention(q, k, v, window, dilation, 0.5, 'mask')

    eager = _attention_with_grads(fn, q, k, v, grad_out)
    compiled = _attention_with_grads(
        torch.compile(fn, fullgraph=True), q, k, v, grad_out)
    for name, a, r in zip(('out', 'grad_q', 'grad_k', 'grad_v'), compiled,
                          eager):
        _close(a, r, 1e-5, f'compiled {name}')


# ---------------------------------------------------------------------------
# the CUDA kernels run on the host (no GPU needed)
# ---------------------------------------------------------------------------
CSRC = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'lma_mmseg',
    'ops', 'csrc')

# (B, T, C, Cv, H, W, window, dilation). Every block runs 256 emulated
# threads and every __syncthreads() switches through all of them, so the
# cost grows with the blocks and the slot and channel chunks of a case: each
# case is one tile (4 x 16 pixels) of one frame wherever the path it covers
# allows.
# The chunk counts are those of float32 / float64 accumulators (launch plans
# of local_attention_cuda_kernel.cuh).
EMU_CASES = [
    (1, 1, 3, 5, 1, 1, 3, 1),  # 1x1 map
    (2, 2, 4, 6, 3, 7, 3, 1),  # B, T > 1: blocks over batch and frames
    (1, 2, 5, 70, 4, 8, 5, 2),  # two value channel blocks
    (1, 2, 3, 4, 3, 4, 7, 3),  # window larger than the map
    (1, 1, 2, 3, 4, 16, 11, 1),  # slot-row chunks 5+5+1 / 2+2+2+2+2+1
    (1, 1, 70, 3, 4, 16, 3, 1),  # key channels over several chunks (2 / 4)
    (1, 1, 2, 3, 3, 16, 5, 120),  # window column chunks 4+1 / 2+2+1
    (1, 1, 3, 4, 5, 17, 3, 1),  # 2 x 2 tiles
]


@pytest.fixture(scope='module')
def emulated_kernels():
    """The emulated kernels' operator library (its ops under
    ``torch.ops.<name>``), built once per checkout."""
    from torch.utils.cpp_extension import load

    # one build folder per checkout: torch caches the build by name, and two
    # checkouts sharing a name would rebuild it for each other
    name = 'lma_mmseg_cuda_emulation_' + hashlib.sha1(
        CSRC.encode()).hexdigest()[:8]
    load(
        name=name,
        sources=[
            osp.join(CSRC, 'cuda', 'emulation', 'local_attention_emu.cpp')
        ],
        extra_include_paths=[CSRC],
        # -O1: a quarter less CPU time than -O2 to build and run these
        # tests on the 2-core machine (the build dominates)
        extra_cflags=['-O1', '-std=c++17'],
        is_python_module=False,
        verbose=False)
    return getattr(torch.ops, name)


def _emulated_all_ops(emu, case, dtype, padding, seed=0, unfused=True):
    """All six ops through the emulated kernels and the float64 reference
    (the fused ones only with ``unfused=False``; the unfused ops have no
    padding mode, so one padding covers them)."""
    B, T, C, Cv, H, W, window, dilation = case
    scale = 0.7
    q, k, v = _inputs(case, dtype, seed=seed, device='cpu')
    g = torch.Generator().manual_seed(seed + 1)
    grad_out = torch.randn(B, Cv, H, W, generator=g).to(dtype)
    attn = torch.randn(B, T, window * window, H, W, generator=g).to(dtype)
    grad_corr = torch.randn(B, T, window * window, H, W,
                            generator=g).to(dtype)
    got, ref = {}, {}
    # fused attention
    out, lse = emu.local_attention_forward(q, k, v, window, dilation, scale,
                                           padding == 'mask')
    got['out'] = out
    (got['grad_q'], got['grad_k'], got['grad_v'],
     grad_bias) = emu.local_attention_backward(grad_out, q, k, v, out, lse,
                                               window, dilation, scale,
                                               padding == 'mask')
    assert grad_bias is None  # no bias
    (ref['out'], ref['grad_q'], ref['grad_k'],
     ref['grad_v']) = _attention_with_grads(
         local_attention_reference, q.double(), k.double(), v.double(),
         grad_out.double(), window=window, dilation=dilation, scale=scale,
         padding=padding)
    logits = scale * local_correlation_reference(q.double(), k.double(),
                                                 window, dilation)
    if padding == 'mask':
        ones = torch.ones(1, 1, 1, H, W, dtype=torch.float64)
        inside = local_correlation_reference(ones[:, 0], ones, window,
                                             dilation) > 0.5
        logits = logits.masked_fill(~inside, float('-inf'))
    got['lse'] = lse
    ref['lse'] = logits.flatten(1, 2).logsumexp(1)
    # the backward with a gradient of the lse output too
    grad_lse = torch.randn(B, H, W, generator=g).to(dtype)
    (got['lse_grad_q'], got['lse_grad_k'], got['lse_grad_v'],
     _) = emu.local_attention_backward(grad_out, q, k, v, out, lse, window,
                                       dilation, scale, padding == 'mask',
                                       None, grad_lse)
    qq, kk, vv = [x.double().clone().requires_grad_() for x in (q, k, v)]
    o, lse_ref = local_attention_reference(
        qq, kk, vv, window, dilation, scale, padding, return_lse=True)
    torch.autograd.backward((o, lse_ref),
                            (grad_out.double(), grad_lse.double()))
    ref['lse_grad_q'], ref['lse_grad_k'], ref['lse_grad_v'] = (qq.grad,
                                                               kk.grad,
                                                               vv.grad)
    if not unfused:
        return got, ref
    # unfused building blocks
    got['corr'] = emu.local_correlation_forward(q, k, window, dilation)
    got['corr_grad_q'], got['corr_grad_k'] = emu.local_correlation_backward(
        grad_corr, q, k, window, dilation)
    qq = q.double().clone().requires_grad_()
    kk = k.double().clone().requires_grad_()
    corr = local_correlation_reference(qq, kk, window, dilation)
    corr.backward(grad_corr.double())
    ref['corr'], ref['corr_grad_q'], ref['corr_grad_k'] = (corr.detach(),
                                                           qq.grad, kk.grad)
    got['agg'] = emu.local_aggregation_forward(attn, v, window, dilation)
    got['agg_grad_attn'], got['agg_grad_v'] = emu.local_aggregation_backward(
        grad_out, attn, v, window, dilation)
    aa = attn.double().clone().requires_grad_()
    vv = v.double().clone().requires_grad_()
    agg = local_aggregation_reference(aa, vv, window, dilation)
    agg.backward(grad_out.double())
    ref['agg'], ref['agg_grad_attn'], ref['agg_grad_v'] = (agg.detach(),
                                                           aa.grad, vv.grad)
    return got, ref


@pytest.mark.slow
@pytest.mark.parametrize('padding', PADDINGS)
def test_emulated_kernels_float64_match_reference(emulated_kernels, padding):
    for case in EMU_CASES:
        got, ref = _emulated_all_ops(emulated_kernels, case, torch.float64,
                                     padding, unfused=padding == 'zeros')
        for name in ref:
            expected_dtype = torch.float64
            assert got[name].dtype == expected_dtype, name
            _close(got[name], ref[name], 1e-11,
                   f'emulated {name} for {_ids(case)} ({padding})')


@pytest.mark.slow
@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-4),
                                       (torch.float16, 1e-2),
                                       (torch.bfloat16, 4e-2)])
def test_emulated_kernels_low_precision(emulated_kernels, dtype, tol):
    for case, padding in ((EMU_CASES[2], 'zeros'), (EMU_CASES[4], 'mask')):
        got, ref = _emulated_all_ops(emulated_kernels, case, dtype, padding)
        for name in ref:
            expected_dtype = torch.float32 if name == 'lse' else dtype
            assert got[name].dtype == expected_dtype, name
            _close(got[name], ref[name], tol,
                   f'emulated {dtype} {name} for {_ids(case)} ({padding})')


@pytest.mark.slow
@pytest.mark.parametrize('acc_size', [4, 8])
def test_launch_plans_fit_shared_memory(emulated_kernels, acc_size):
    """Every window/dilation/channel count gets a plan within 48 KiB."""
    # kernel families: (extra values, key stage, value stage, merge)
    families = [(0, True, False, False), (0, False, True, False),
                (0, True, False, True), (64, True, True, False)]
    for window in (1, 3, 5, 9, 21, 41, 101, 201):
        for dilation in (1, 2, 3, 8, 60):
            for channels in (1, 16, 128, 2048):
                for extra, key, value, merge in families:
                    ni, nj, cc, ks, smem = emulated_kernels.launch_plan(
                        window, dilation, channels, acc_size, extra, key,
                        value, merge)
                    assert 1 <= ni <= window and 1 <= nj <= window
                    assert 1 <= cc <= channels and 1 <= ks <= 16
                    assert smem <= 48 * 1024
                    halo = (4 + (ni - 1) * dilation) * (16 +
                                                        (nj - 1) * dilation)
                    if value:
                        assert ks * 4 * halo * acc_size <= 30 * 1024
                    if key:
                        assert cc * (64 + halo) * acc_size <= 30 * 1024


@pytest.mark.slow
@pytest.mark.parametrize('padding', PADDINGS)
@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-11),
                                       (torch.float32, 1e-4)])
def test_emulated_kernels_with_bias(emulated_kernels, padding, dtype, tol):
    """The fused CUDA kernels with a position bias, run on the host."""
    emu = emulated_kernels
    for seed, case in enumerate((EMU_CASES[1], EMU_CASES[3], EMU_CASES[4],
                                 EMU_CASES[6])):
        B, T, C, Cv, H, W, window, dilation = case
        q, k, v = _inputs(case, dtype, seed=seed, device='cpu')
        g = torch.Generator().manual_seed(seed + 7)
        bias = torch.randn(T, window * window, generator=g).to(dtype)
        grad_out = torch.randn(B, Cv, H, W, generator=g).to(dtype)
        mask = padding == 'mask'
        out, lse = emu.local_attention_forward(q, k, v, window, dilation, 0.7,
                                               mask, bias)
        grads = emu.local_attention_backward(grad_out, q, k, v, out, lse,
                                             window, dilation, 0.7, mask,
                                             bias)
        assert grads[3].dtype == dtype and grads[3].shape == bias.shape
        # the float64 reference, the bias a fourth differentiable input
        qq, kk, vv, bb = (x.double().clone().requires_grad_()
                          for x in (q, k, v, bias))
        r = local_attention_reference(qq, kk, vv, window, dilation, 0.7,
                                      padding, bias=bb)
        r.backward(grad_out.double())
        ref = (r.detach(), qq.grad, kk.grad, vv.grad, bb.grad)
        for name, a, e in zip(('out', 'grad_q', 'grad_k', 'grad_v',
                               'grad_bias'), (out, ) + tuple(grads), ref):
            _close(a, e, tol, f'emulated {name} with bias for {_ids(case)} '
                   f'({padding}, {dtype})')


@requires_cuda
@pytest.mark.parametrize('padding', PADDINGS)
def test_attention_with_bias_matches_reference(padding):
    for case in (CASES[1], CASES[3], CASES[4], CASES[8]):
        B, T, C, Cv, H, W, window, dilation = case
        q, k, v = _inputs(case, torch.float32)
        bias = torch.randn(T, window * window, device='cuda')
        grad_out = torch.randn(B, Cv, H, W, device='cuda')
        results = []
        for dt in (torch.float32, torch.float64):
            qq, kk, vv, bb = (x.detach().to(dt).clone().requires_grad_()
                              for x in (q, k, v, bias))
            fn = local_attention if dt == torch.float32 else \
                local_attention_reference
            out = fn(qq, kk, vv, window, dilation, 0.7, padding, bias=bb)
            out.backward(grad_out.to(dt))
            results.append((out.detach(), qq.grad, kk.grad, vv.grad,
                            bb.grad))
        for name, a, r in zip(('out', 'grad_q', 'grad_k', 'grad_v',
                               'grad_bias'), *results):
            _close(a, r, 1e-4, f'{name} with bias for {_ids(case)}')
    q, k, v = _inputs(CASES[0], torch.float64)
    q, k, v = [x.requires_grad_() for x in (q, k, v)]
    bias = torch.randn(1, 9, device='cuda', dtype=torch.float64,
                       requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda q, k, v, b: local_attention(q, k, v, 3, 1, 0.8, padding,
                                           bias=b), (q, k, v, bias))
