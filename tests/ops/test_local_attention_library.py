"""The local attention ops as torch.library ops: opcheck, torch.compile,
torch.export, the FLOP handles for mmengine's FlopAnalyzer, autocast and
the choice of the CPU kernel variant."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from lma_mmseg.ops import (FLOP_HANDLES, cpu_isa, local_aggregation,
                           local_aggregation_flops, local_attention,
                           local_attention_flops, local_attention_reference,
                           local_attention_unfused, local_correlation,
                           local_correlation_flops, set_cpu_isa)

PADDINGS = ('zeros', 'mask')


def make_inputs(B, C, Cv, T, H, W, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, C, H, W, generator=g, dtype=dtype)
    k = torch.randn(B, T, C, H, W, generator=g, dtype=dtype)
    v = torch.randn(B, T, Cv, H, W, generator=g, dtype=dtype)
    return q, k, v


def grads_of(fn, q, k, v, grad_out, **kwargs):
    q, k, v = (x.detach().clone().requires_grad_() for x in (q, k, v))
    out = fn(q, k, v, **kwargs)
    out.backward(grad_out)
    return out.detach(), q.grad, k.grad, v.grad


# ----------------------------------------------------------------------
# torch.library.opcheck: schema, fake kernels, autograd registration
# ----------------------------------------------------------------------
@pytest.mark.parametrize('mask_padding', [False, True])
def test_opcheck_attention(mask_padding):
    q, k, v = make_inputs(2, 3, 4, 2, 5, 6, dtype=torch.float64)
    args = (q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), 3, 2,
            0.7, mask_padding)
    torch.library.opcheck(torch.ops.lma.local_attention_forward.default,
                          args)
    out, lse = torch.ops.lma.local_attention_forward(*args)
    grad_out = torch.randn_like(out)
    torch.library.opcheck(torch.ops.lma.local_attention_backward.default,
                          (grad_out, q.detach(), k.detach(), v.detach(),
                           out.detach(), lse, 3, 2, 0.7, mask_padding))
    # float32 as well (lse is float32 then)
    q32, k32, v32 = (x.detach().float() for x in (q, k, v))
    torch.library.opcheck(torch.ops.lma.local_attention_forward.default,
                          (q32, k32, v32, 5, 1, 1.0, mask_padding))


@pytest.mark.parametrize('mask_padding', [False, True])
def test_opcheck_attention_with_bias(mask_padding):
    q, k, v = make_inputs(1, 3, 4, 2, 4, 5, dtype=torch.float64)
    bias = torch.randn(2, 9, dtype=torch.float64, requires_grad=True)
    args = (q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), 3, 1,
            0.7, mask_padding, bias)
    torch.library.opcheck(torch.ops.lma.local_attention_forward.default,
                          args)
    out, lse = torch.ops.lma.local_attention_forward(*args)
    torch.library.opcheck(
        torch.ops.lma.local_attention_backward.default,
        (torch.randn_like(out), q.detach(), k.detach(), v.detach(),
         out.detach(), lse, 3, 1, 0.7, mask_padding, bias.detach()))


def test_opcheck_correlation_and_aggregation():
    q, k, v = make_inputs(1, 3, 5, 3, 4, 7, dtype=torch.float64)
    q.requires_grad_()
    k.requires_grad_()
    torch.library.opcheck(torch.ops.lma.local_correlation_forward.default,
                          (q, k, 3, 1))
    grad_corr = torch.randn(1, 3, 9, 4, 7, dtype=torch.float64)
    torch.library.opcheck(torch.ops.lma.local_correlation_backward.default,
                          (grad_corr, q.detach(), k.detach(), 3, 1))
    attn = torch.rand(1, 3, 25, 4, 7, dtype=torch.float64,
                      requires_grad=True)
    v.requires_grad_()
    torch.library.opcheck(torch.ops.lma.local_aggregation_forward.default,
                          (attn, v, 5, 2))
    grad_out = torch.randn(1, 5, 4, 7, dtype=torch.float64)
    torch.library.opcheck(torch.ops.lma.local_aggregation_backward.default,
                          (grad_out, attn.detach(), v.detach(), 5, 2))


def test_ops_check_shapes_when_called_directly():
    q, k, v = make_inputs(1, 3, 5, 2, 4, 7)
    with pytest.raises(RuntimeError, match=r'v must be \(B, T, Cv, H, W\)'):
        torch.ops.lma.local_attention_forward(q, k, v[..., :3], 3, 1, 1.0,
                                              False)
    with pytest.raises(RuntimeError, match='window must be odd'):
        torch.ops.lma.local_correlation_forward(q, k, 4, 1)
    with pytest.raises(RuntimeError, match='attn must be'):
        torch.ops.lma.local_aggregation_forward(
            torch.rand(1, 2, 9, 4, 7), v, 5, 1)
    with pytest.raises(RuntimeError, match='dtype'):
        torch.ops.lma.local_attention_forward(q, k.double(), v, 3, 1, 1.0,
                                              False)


# ----------------------------------------------------------------------
# torch.compile(fullgraph=True): forward and backward, no graph break
# ----------------------------------------------------------------------
class TinyAttention(nn.Module):
    """A projection, the local attention and a projection."""

    def __init__(self, channels=4, window=3, padding='zeros', fn=None,
                 frames=None):
        super().__init__()
        self.proj = nn.Conv2d(channels, channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        self.window = window
        self.padding = padding
        self.fn = fn or local_attention
        # a learnt position bias (T, window * window) when frames is given
        self.bias = None if frames is None else nn.Parameter(
            0.1 * torch.randn(frames, window * window))

    def forward(self, x, keys, values):
        q = self.proj(x)
        read = self.fn(q, keys, values, window=self.window, dilation=1,
                       scale=0.5, padding=self.padding, bias=self.bias)
        return self.out(read + x)


@pytest.mark.parametrize('padding,frames', [('zeros', None), ('mask', 3)])
def test_compiled_forward_backward_equals_eager(padding, frames):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = TinyAttention(padding=padding, frames=frames)
    x, k, v = make_inputs(2, 4, 4, 3, 6, 7, seed=1)
    grad = torch.randn(2, 4, 6, 7)

    def run(m):
        xs, ks, vs = (t.clone().requires_grad_() for t in (x, k, v))
        out = m(xs, ks, vs)
        out.backward(grad)
        params = [p.grad.clone() for p in m.parameters()]
        m.zero_grad()
        return [out.detach(), xs.grad, ks.grad, vs.grad] + params

    eager = run(model)
    compiled = run(torch.compile(model, fullgraph=True))
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_compiled_unfused_ops_have_no_graph_break():
    torch._dynamo.reset()
    q, k, v = make_inputs(1, 3, 4, 2, 5, 6, seed=2)
    q.requires_grad_()
    fn = torch.compile(
        lambda q, k, v: local_attention_unfused(q, k, v, 5, 1, 1.0, 'mask'),
        fullgraph=True)
    out = fn(q, k, v)
    out.sum().backward()
    ref_q = q.detach().clone().requires_grad_()
    ref = local_attention_reference(ref_q, k, v, 5, 1, 1.0, 'mask')
    ref.sum().backward()
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(q.grad, ref_q.grad, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------
# torch.export: save, load, run
# ----------------------------------------------------------------------
def test_export_save_load(tmp_path):
    torch.manual_seed(0)
    model = TinyAttention(padding='mask', frames=2).eval()
    inputs = make_inputs(1, 4, 4, 2, 5, 8, seed=3)
    with torch.no_grad():
        expected = model(*inputs)
    program = torch.export.export(model, inputs)
    targets = {
        str(n.target)
        for n in program.graph_module.graph.nodes if n.op == 'call_function'
    }
    assert 'lma.local_attention_forward.default' in targets
    path = tmp_path / 'tiny.pt2'
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()
    with torch.no_grad():
        got = loaded(*inputs)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_exported_program_loads_in_a_fresh_process(tmp_path):
    torch.manual_seed(0)
    model = TinyAttention().eval()
    inputs = make_inputs(1, 4, 4, 2, 5, 8, seed=4)
    program = torch.export.export(model, inputs)
    path = tmp_path / 'tiny.pt2'
    torch.export.save(program, str(path))
    with torch.no_grad():
        expected = model(*inputs)
    torch.save(dict(inputs=inputs, expected=expected),
               str(tmp_path / 'io.pt'))
    script = (
        'import sys, torch\n'
        'import lma_mmseg.ops  # registers torch.ops.lma\n'
        'io = torch.load(sys.argv[2])\n'
        'm = torch.export.load(sys.argv[1]).module()\n'
        'with torch.no_grad():\n'
        '    out = m(*io["inputs"])\n'
        'assert (out - io["expected"]).abs().max() <= 1e-6\n'
        'print("ok")\n')
    result = subprocess.run(
        [sys.executable, '-c', script,
         str(path), str(tmp_path / 'io.pt')],
        capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith('ok')


# ----------------------------------------------------------------------
# FLOPs
# ----------------------------------------------------------------------
def test_flop_formulas():
    assert local_attention_flops((2, 16, 8, 10), (2, 3, 16, 8, 10),
                                 (2, 3, 64, 8, 10), 21) == \
        2 * 3 * 21 * 21 * 8 * 10 * (16 + 64)
    assert local_correlation_flops((1, 4, 5, 6), (1, 2, 4, 5, 6), 3) == \
        2 * 9 * 30 * 4
    assert local_aggregation_flops((1, 2, 9, 5, 6), (1, 2, 7, 5, 6)) == \
        2 * 9 * 30 * 7
    with pytest.raises(ValueError, match='k_shape'):
        local_attention_flops((1, 4, 5, 6), (1, 4, 5, 6), (1, 2, 7, 5, 6), 3)
    with pytest.raises(ValueError, match='window'):
        local_correlation_flops((1, 4, 5, 6), (1, 2, 4, 5, 6), 0)


def test_flop_handles_with_mmengine_flop_analyzer():
    from mmengine.analysis import FlopAnalyzer
    torch.manual_seed(0)
    window = 5
    model = TinyAttention(channels=4, window=window).eval()
    x, k, v = make_inputs(1, 4, 4, 3, 6, 9, seed=5)
    convs = 2 * (6 * 9 * 4 * 4)  # two 1x1 convolutions 4 -> 4
    attention = local_attention_flops(x.shape, k.shape, v.shape, window)
    analyzer = FlopAnalyzer(model, (x, k, v))
    analyzer.set_op_handle(**FLOP_HANDLES)
    analyzer.unsupported_ops_warnings(False)
    assert analyzer.total() == convs + attention
    # mmengine names an op by its name without the namespace
    assert analyzer.by_operator()['local_attention_forward'] == attention
    assert not any('lma' in op for op in analyzer.unsupported_ops())
    # the unfused pair: correlation + aggregation count the same
    unfused = TinyAttention(channels=4, window=window,
                            fn=local_attention_unfused).eval()
    unfused.load_state_dict(model.state_dict())
    analyzer = FlopAnalyzer(unfused, (x, k, v))
    analyzer.set_op_handle(**FLOP_HANDLES)
    analyzer.unsupported_ops_warnings(False)
    by_op = analyzer.by_operator()
    assert by_op['local_correlation_forward'] == \
        local_correlation_flops(x.shape, k.shape, window)
    assert by_op['local_aggregation_forward'] == \
        local_aggregation_flops((1, 3, window**2, 6, 9), v.shape)
    assert analyzer.total() == convs + attention


# ----------------------------------------------------------------------
# autocast
# ----------------------------------------------------------------------
@pytest.mark.parametrize('padding', PADDINGS)
def test_cpu_bfloat16_autocast_mixed_dtypes(padding):
    """A bfloat16 query with float32 memory runs in float32 on CPU."""
    q, k, v = make_inputs(1, 6, 5, 2, 7, 9, seed=6)
    grad_out = torch.randn(1, 5, 7, 9)
    kwargs = dict(window=5, dilation=1, scale=0.5, padding=padding)
    ref = grads_of(local_attention_reference, q.double(), k.double(),
                   v.double(), grad_out.double(), **kwargs)
    for fn in (local_attention, local_attention_unfused):
        qb = q.to(torch.bfloat16).requires_grad_()
        kf = k.clone().requires_grad_()
        vf = v.clone().requires_grad_()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = fn(qb, kf, vf, **kwargs)
        assert out.dtype == torch.float32  # documented: float32 on CPU
        out.backward(grad_out)
        assert qb.grad.dtype == torch.bfloat16
        assert kf.grad.dtype == vf.grad.dtype == torch.float32
        # the query was rounded to bfloat16: bfloat16 tolerance
        for name, got, exp in zip(('out', 'grad_q', 'grad_k', 'grad_v'),
                                  (out, qb.grad, kf.grad, vf.grad), ref):
            err = (got.double() - exp).abs().max().item()
            assert err <= 4e-2 * max(1.0, exp.abs().max().item()), (
                fn.__name__, name, err)


def test_cpu_autocast_inside_a_bfloat16_network():
    """Memory and query both produced by bfloat16 autocast convolutions."""
    torch.manual_seed(0)
    model = TinyAttention(channels=4, window=3)
    x, k, v = make_inputs(1, 4, 4, 2, 5, 6, seed=7)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(x, k.to(torch.bfloat16), v)
        assert model.proj(x).dtype == torch.bfloat16
    out.float().sum().backward()
    with torch.no_grad():
        ref = model(x, k, v)
    assert (out.float() - ref).abs().max() <= 5e-2
    assert all(p.grad is not None for p in model.parameters())


def test_cpu_autocast_under_torch_compile():
    torch._dynamo.reset()
    q, k, v = make_inputs(1, 3, 4, 2, 5, 6, seed=8)

    def fn(q, k, v):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            return (local_attention(q.to(torch.bfloat16), k, v, 3),
                    local_attention_unfused(q, k.to(torch.bfloat16), v, 3))

    fused, unfused = torch.compile(fn, fullgraph=True)(q, k, v)
    eager_fused, eager_unfused = fn(q, k, v)
    assert fused.dtype == unfused.dtype == torch.float32
    # inductor may drop the float32 -> bfloat16 -> float32 round trip of the
    # cast input: equal to eager within bfloat16 rounding
    ref = local_attention_reference(q, k, v, 3)
    for got, eager in ((fused, eager_fused), (unfused, eager_unfused)):
        torch.testing.assert_close(got, eager, rtol=0, atol=2e-2)
        torch.testing.assert_close(got, ref, rtol=0, atol=2e-2)


def test_float64_is_left_alone_by_autocast():
    q, k, v = make_inputs(1, 3, 4, 2, 5, 6, dtype=torch.float64)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = local_attention(q, k, v, 3)
        with pytest.raises(ValueError, match='same dtype'):
            local_attention(q, k.float(), v, 3)
    assert out.dtype == torch.float64


# ----------------------------------------------------------------------
# CPU kernel variants
# ----------------------------------------------------------------------
def _host_has_avx2():
    try:
        with open('/proc/cpuinfo') as f:
            flags = f.read()
    except OSError:
        return False
    return ' avx2' in flags and ' fma' in flags


@pytest.fixture
def restore_isa():
    yield
    set_cpu_isa(os.environ.get('LMA_MMSEG_CPU_ISA') or 'auto')


def test_active_cpu_variant_is_reported(restore_isa):
    set_cpu_isa('auto')
    assert cpu_isa() == ('avx2' if _host_has_avx2() else 'baseline')
    set_cpu_isa('baseline')
    assert cpu_isa() == 'baseline'
    if _host_has_avx2():
        set_cpu_isa('avx2')
        assert cpu_isa() == 'avx2'
    else:
        with pytest.raises(ValueError, match='avx2'):
            set_cpu_isa('avx2')
    with pytest.raises(ValueError, match="'auto', 'avx2' or 'baseline'"):
        set_cpu_isa('sse9')


@pytest.mark.parametrize('padding', PADDINGS)
def test_baseline_variant_matches_reference(restore_isa, padding):
    set_cpu_isa('baseline')
    assert cpu_isa() == 'baseline'
    for seed, (B, C, Cv, T, H, W, window, dilation) in enumerate([
        (2, 5, 9, 3, 7, 19, 5, 2),  # channels not a multiple of a vector
        (1, 16, 64, 3, 12, 23, 21, 1),  # the ERFNet setting, small map
    ]):
        q, k, v = make_inputs(B, C, Cv, T, H, W, seed=seed)
        q = q / C**0.5
        grad_out = torch.randn(B, Cv, H, W)
        kwargs = dict(window=window, dilation=dilation, scale=0.8,
                      padding=padding)
        got = grads_of(local_attention, q, k, v, grad_out, **kwargs)
        ref = grads_of(local_attention_reference, q.double(), k.double(),
                       v.double(), grad_out.double(), **kwargs)
        for name, a, r in zip(('out', 'grad_q', 'grad_k', 'grad_v'), got,
                              ref):
            err = (a.double() - r).abs().max().item()
            assert err <= 1e-5 * max(1.0, r.abs().max().item()), (name, err)
        corr = local_correlation(q, k, window, dilation)
        attn = corr.flatten(1, 2).softmax(1).view_as(corr)
        out = local_aggregation(attn, v, window, dilation)
        ref_out = local_attention_reference(q, k, v, window, dilation, 1.0)
        assert (out - ref_out).abs().max() <= 1e-5
    # gradcheck in float64 on the baseline kernels
    q, k, v = make_inputs(1, 2, 3, 2, 3, 4, dtype=torch.float64)
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    assert torch.autograd.gradcheck(
        lambda q, k, v: local_attention(q, k, v, 3, 1, 0.7, padding),
        (q, k, v))


def test_cpu_variant_from_the_environment():
    """The variable is read at import: a good and a bad value, each in a
    fresh process (the two run side by side)."""
    script = ('import lma_mmseg.ops as o; print(o.cpu_isa())')
    procs = [
        subprocess.Popen([sys.executable, '-c', script],
                         env=dict(os.environ, LMA_MMSEG_CPU_ISA=isa),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True) for isa in ('baseline', 'fastest')
    ]
    (good_out, good_err), (_, bad_err) = (p.communicate(timeout=300)
                                          for p in procs)
    assert procs[0].returncode == 0, good_err[-2000:]
    assert good_out.strip() == 'baseline'
    assert procs[1].returncode != 0
    assert 'LMA_MMSEG_CPU_ISA' in bad_err
