"""The softmax's log-normaliser as an output of the op (``return_lse``):
every path against ``torch.logsumexp`` of the reference's logits, its
gradient by gradcheck, and the op under torch.compile and export."""
import pytest
import torch
from torch.autograd import gradcheck

from helpers.op_inputs import _ids, make_inputs, random_shapes
from lma_mmseg.ops import (ATTENTION_IMPLS, local_attention,
                           local_attention_reference, local_attention_unfused,
                           local_correlation_reference)

PADDINGS = ('zeros', 'mask')
IMPLS = ('fused', 'unfused', 'reference')
SHAPES = [
    # B, C, Cv, T, H, W, window, dilation
    (2, 16, 64, 3, 16, 32, 3, 1),  # the demo's neck
    (1, 3, 5, 2, 3, 4, 7, 1),  # window larger than the map
    (1, 1, 1, 1, 1, 1, 1, 1),
] + random_shapes(8, seed=77)
GRAD_SHAPES = [
    (2, 2, 3, 2, 3, 4, 3, 1),
    (1, 2, 9, 2, 3, 4, 5, 2),
    (1, 2, 3, 1, 5, 3, 3, 3),
]


def logits_of(q, k, window, dilation, scale, padding, bias=None):
    """(B, T * S, H, W): the logits of the softmax, by their definition."""
    corr = local_correlation_reference(q, k, window, dilation)
    logits = scale * corr
    if bias is not None:
        logits = logits + bias[None, :, :, None, None]
    if padding == 'mask':
        B, T, _, H, W = k.shape
        ones = torch.ones(1, 1, 1, H, W, dtype=q.dtype)
        inside = local_correlation_reference(ones[:, 0], ones, window,
                                             dilation) > 0.5
        logits = logits.masked_fill(~inside, float('-inf'))
    return logits.flatten(1, 2)


def make_bias(T, window, dtype=torch.float32, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, window * window, generator=g, dtype=dtype)


@pytest.mark.parametrize('with_bias', [False, True], ids=['nobias', 'bias'])
@pytest.mark.parametrize('padding', PADDINGS)
@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('shape', SHAPES, ids=_ids(SHAPES))
def test_lse_is_the_logsumexp_of_the_logits(shape, impl, padding, with_bias):
    B, C, Cv, T, H, W, window, dilation = shape
    q, k, v = make_inputs(B, C, Cv, T, H, W, seed=sum(shape))
    bias = make_bias(T, window) if with_bias else None
    fn = ATTENTION_IMPLS[impl]
    out, lse = fn(q, k, v, window, dilation, 0.3, padding, bias,
                  return_lse=True)
    assert lse.shape == (B, H, W) and lse.dtype == torch.float32
    expected = logits_of(q.double(), k.double(), window, dilation, 0.3,
                         padding, None if bias is None else bias.double())
    torch.testing.assert_close(
        lse, expected.logsumexp(1).float(), atol=1e-5, rtol=1e-5)
    # the read-out is the one without return_lse
    torch.testing.assert_close(
        out, fn(q, k, v, window, dilation, 0.3, padding, bias), atol=0,
        rtol=0)


@pytest.mark.parametrize('padding', PADDINGS)
def test_float64_lse(padding):
    q, k, v = make_inputs(2, 4, 3, 2, 5, 6, torch.float64)
    for fn in (local_attention, local_attention_unfused,
               local_attention_reference):
        _, lse = fn(q, k, v, 3, 1, 1.0, padding, return_lse=True)
        assert lse.dtype == torch.float64
        torch.testing.assert_close(
            lse, logits_of(q, k, 3, 1, 1.0, padding).logsumexp(1))


@pytest.mark.parametrize('with_bias', [False, True], ids=['nobias', 'bias'])
@pytest.mark.parametrize('padding', PADDINGS)
@pytest.mark.parametrize('shape', GRAD_SHAPES, ids=_ids(GRAD_SHAPES))
def test_gradcheck_with_lse(shape, padding, with_bias):
    """Both outputs carry gradient: the lse's alone, and together with the
    read-out's (the combination a fusion that sees the lse trains)."""
    B, C, Cv, T, H, W, window, dilation = shape
    q, k, v = make_inputs(B, C, Cv, T, H, W, torch.float64,
                          requires_grad=True)
    inputs = [q, k, v]
    if with_bias:
        inputs.append(make_bias(T, window, torch.float64).requires_grad_())

    def lse_only(*args):
        return local_attention(*args[:3], window, dilation, 0.7, padding,
                               *args[3:], return_lse=True)[1]

    def both(*args):
        out, lse = local_attention(*args[:3], window, dilation, 0.7, padding,
                                   *args[3:], return_lse=True)
        return out, lse

    assert gradcheck(lse_only, inputs)
    assert gradcheck(both, inputs)


@pytest.mark.parametrize('padding', PADDINGS)
def test_lse_gradients_of_every_path_agree(padding):
    """The fused kernels' backward with an lse gradient equals autograd
    through the unfused and the reference paths (float32)."""
    q, k, v = make_inputs(2, 6, 5, 3, 7, 9, seed=5)
    bias = make_bias(3, 5)
    g = torch.Generator().manual_seed(9)
    w_out = torch.randn(2, 5, 7, 9, generator=g)
    w_lse = torch.randn(2, 7, 9, generator=g)
    grads = {}
    for impl in IMPLS:
        inputs = [t.clone().requires_grad_() for t in (q, k, v, bias)]
        out, lse = ATTENTION_IMPLS[impl](*inputs[:3], 5, 1, 0.5, padding,
                                         inputs[3], return_lse=True)
        ((out * w_out).sum() + (lse * w_lse).sum()).backward()
        grads[impl] = [t.grad for t in inputs]
    for impl in ('fused', 'unfused'):
        for got, want in zip(grads[impl], grads['reference']):
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_unused_lse_changes_no_gradient():
    q, k, v = make_inputs(1, 4, 3, 2, 5, 6, requires_grad=True)
    out, _ = local_attention(q, k, v, 3, return_lse=True)
    g1 = torch.autograd.grad(out.sum(), (q, k, v))
    out = local_attention(q, k, v, 3)
    g2 = torch.autograd.grad(out.sum(), (q, k, v))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_backward_op_checks_the_lse_gradient_shape():
    q, k, v = make_inputs(1, 4, 3, 2, 5, 6)
    out, lse = torch.ops.lma.local_attention_forward(q, k, v, 3, 1, 1.0,
                                                     False)
    with pytest.raises(RuntimeError, match='grad_lse'):
        torch.ops.lma.local_attention_backward(
            torch.ones_like(out), q, k, v, out, lse, 3, 1, 1.0, False, None,
            torch.ones(1, 5, 7))


@pytest.mark.slow
def test_lse_under_compile_and_export(tmp_path):
    """One graph with both outputs (forward and backward under inductor),
    and an exported program that returns the lse."""
    q, k, v = make_inputs(2, 4, 3, 2, 6, 8, seed=2)
    bias = make_bias(2, 3)

    def fn(q, k, v, bias):
        out, lse = local_attention(q, k, v, 3, 1, 0.5, 'zeros', bias,
                                   return_lse=True)
        return out * torch.sigmoid(lse)[:, None]

    inputs = [t.clone().requires_grad_() for t in (q, k, v, bias)]
    fn(*inputs).square().sum().backward()
    eager = [t.grad for t in inputs]
    inputs = [t.clone().requires_grad_() for t in (q, k, v, bias)]
    compiled = torch.compile(fn, fullgraph=True)
    out = compiled(*inputs)
    torch.testing.assert_close(out, fn(q, k, v, bias), atol=1e-5, rtol=1e-5)
    out.square().sum().backward()
    for got, want in zip((t.grad for t in inputs), eager):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)

    class Module(torch.nn.Module):

        def forward(self, q, k, v, bias):
            return local_attention(q, k, v, 3, 1, 0.5, 'mask', bias,
                                   return_lse=True)

    program = torch.export.export(Module(), (q, k, v, bias))
    path = tmp_path / 'lse.pt2'
    torch.export.save(program, path)
    out, lse = torch.export.load(path).module()(q, k, v, bias)
    ref_out, ref_lse = local_attention_reference(q, k, v, 3, 1, 0.5, 'mask',
                                                 bias, return_lse=True)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse, ref_lse, atol=1e-5, rtol=1e-5)
