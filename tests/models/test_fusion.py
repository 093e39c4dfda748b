"""GatedFusion (ERFNet) and GatedDownFusion (PSPNet) fusion modules."""
import pytest
import torch
import torch.nn.functional as F
from mmseg.registry import MODELS

import lma_mmseg  # noqa: F401  (registers the components)
from helpers import tiny_models


def build(kind: str, **kwargs):
    cfg = dict(type=kind, query_channels=6, memory_channels=6,
               out_channels=10)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def randomise_bn(module, seed=0):
    tiny_models.randomise_bn(module, seed, scale=0.3)


def bn(x, layer):
    return F.batch_norm(x, layer.running_mean, layer.running_var,
                        layer.weight, layer.bias, False, 0.0, layer.eps)


def test_gated_fusion_formula():
    """out = ReLU(BN(conv_q(q') g1 + conv_m(m') g2)) with
    q' = ReLU(BN(q)), m' = ReLU(BN(m)), g = sigmoid(conv3x3(cat(q', m')))."""
    torch.manual_seed(0)
    fusion = build('GatedFusion', query_channels=4, memory_channels=6)
    randomise_bn(fusion)
    fusion.eval()
    q = torch.randn(2, 4, 7, 9)
    m = torch.randn(2, 6, 7, 9)
    qp = F.relu(bn(q, fusion.query_pre[0]))
    mp = F.relu(bn(m, fusion.memory_pre[0]))
    both = torch.cat([qp, mp], 1)
    # two 3x3 gate convolutions, stored as one layer (query gate first)
    assert fusion.gates.weight.shape == (2, 10, 3, 3)
    g1 = torch.sigmoid(
        F.conv2d(both, fusion.gates.weight[:1], fusion.gates.bias[:1],
                 padding=1))
    g2 = torch.sigmoid(
        F.conv2d(both, fusion.gates.weight[1:], fusion.gates.bias[1:],
                 padding=1))
    mixed = (F.conv2d(qp, fusion.query_proj.weight) * g1 +
             F.conv2d(mp, fusion.memory_proj.weight) * g2)
    expected = F.relu(bn(mixed, fusion.out_norm))
    out = fusion(q, m)
    assert out.shape == (2, 10, 7, 9)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_gated_fusion_gates_select_a_branch():
    torch.manual_seed(1)
    fusion = build('GatedFusion', gate_channels=10).eval()
    q, m = torch.randn(1, 6, 5, 5), torch.randn(1, 6, 5, 5)
    with torch.no_grad():
        fusion.gates.bias[:10].fill_(1e4)  # query gate open
        fusion.gates.bias[10:].fill_(-1e4)  # memory gate closed
    only_query = fusion(q, m)
    assert torch.allclose(only_query, fusion(q, torch.randn_like(m)))
    with torch.no_grad():
        fusion.gates.bias[:10].fill_(-1e4)
        fusion.gates.bias[10:].fill_(1e4)
    only_memory = fusion(q, m)
    assert torch.allclose(only_memory, fusion(torch.randn_like(q), m))
    assert not torch.allclose(only_query, only_memory)


def test_gated_fusion_dropout_and_empty_memory():
    torch.manual_seed(2)
    fusion = build('GatedFusion', dropout_ratio=0.3)
    q, m = torch.randn(2, 6, 8, 8), torch.randn(2, 6, 8, 8)
    fusion.train()
    assert not torch.equal(fusion(q, m), fusion(q, m))  # dropout active
    out = fusion(q, m)
    out.sum().backward()
    for name, p in fusion.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    fusion.eval()
    assert torch.equal(fusion(q, m), fusion(q, m))
    # None is a zero read-out
    assert torch.equal(fusion(q, None), fusion(q, torch.zeros_like(m)))


@pytest.mark.parametrize('down_bias', [False, True])
def test_gated_down_fusion_formula(down_bias):
    """d = ReLU(BN(conv_q(q) + conv_m(m)));
    out = ReLU(BN(q sigmoid(up_q(d)) + m sigmoid(up_m(d)))); with
    ``down_bias`` conv_q and conv_m have a bias each."""
    torch.manual_seed(3)
    fusion = build(
        'GatedDownFusion', query_channels=12, memory_channels=12,
        out_channels=12, channels=4, down_bias=down_bias)
    randomise_bn(fusion)
    fusion.eval()
    for conv in (fusion.query_down, fusion.memory_down):
        assert (conv.bias is not None) == down_bias
        if down_bias:  # non-zero, so that they count
            with torch.no_grad():
                conv.bias.normal_(0, 0.5)
    qb, mb = fusion.query_down.bias, fusion.memory_down.bias
    # two distinct up-projections
    assert fusion.query_up is not fusion.memory_up
    assert not torch.equal(fusion.query_up.weight, fusion.memory_up.weight)
    assert fusion.query_up.weight.shape == (12, 4, 1, 1)
    q, m = torch.randn(2, 12, 6, 5), torch.randn(2, 12, 6, 5)
    d = F.relu(
        bn(
            F.conv2d(q, fusion.query_down.weight, qb) +
            F.conv2d(m, fusion.memory_down.weight, mb), fusion.down_norm))
    gq = torch.sigmoid(
        F.conv2d(d, fusion.query_up.weight, fusion.query_up.bias))
    gm = torch.sigmoid(
        F.conv2d(d, fusion.memory_up.weight, fusion.memory_up.bias))
    expected = F.relu(bn(q * gq + m * gm, fusion.out_norm))
    torch.testing.assert_close(fusion(q, m), expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(fusion(q, None), fusion(q, torch.zeros_like(q)))


def test_gated_down_fusion_down_bias_parameters_and_gradient():
    """down_bias adds 2 x channels parameters; the BN right after the
    down-projections removes a constant, so in training the loss gives
    those biases no gradient while their weights get one."""
    plain = build('GatedDownFusion', query_channels=12, memory_channels=12,
                  out_channels=12, channels=4)
    biased = build('GatedDownFusion', query_channels=12, memory_channels=12,
                   out_channels=12, channels=4, down_bias=True)
    count = [sum(p.numel() for p in f.parameters()) for f in (plain, biased)]
    assert count[1] - count[0] == 2 * 4
    assert biased.down_bias and not plain.down_bias
    biased.train()
    gen = torch.Generator().manual_seed(4)
    q = torch.randn(3, 12, 5, 6, generator=gen)
    m = torch.randn(3, 12, 5, 6, generator=gen)
    biased(q, m).square().sum().backward()
    for conv in (biased.query_down, biased.memory_down):
        assert conv.weight.grad.abs().max() > 1e-3
        assert conv.bias.grad.abs().max() < 1e-5
    with pytest.raises(TypeError, match='down_bias'):
        build('GatedDownFusion', down_bias=1)


def test_gated_down_fusion_output_projection_and_grads():
    fusion = build('GatedDownFusion', channels=3).train()
    assert isinstance(fusion.out_proj, torch.nn.Conv2d)
    q = torch.randn(2, 6, 4, 4, requires_grad=True)
    m = torch.randn(2, 6, 4, 4, requires_grad=True)
    out = fusion(q, m)
    assert out.shape == (2, 10, 4, 4)
    out.square().sum().backward()
    assert q.grad.abs().sum() > 0 and m.grad.abs().sum() > 0
    for name, p in fusion.named_parameters():
        assert p.grad is not None, name
    same = build('GatedDownFusion', out_channels=6)
    assert isinstance(same.out_proj, torch.nn.Identity)


@pytest.mark.parametrize('kind,kwargs,match', [
    ('GatedFusion', dict(query_channels=0), 'query_channels'),
    ('GatedFusion', dict(out_channels=-2), 'out_channels'),
    ('GatedFusion', dict(gate_channels=3), 'gate_channels'),
    ('GatedFusion', dict(gate_kernel_size=2), 'kernel sizes must be odd'),
    ('GatedFusion', dict(dropout_ratio=1.5), 'dropout_ratio'),
    ('GatedDownFusion', dict(memory_channels=5), 'memory_channels'),
    ('GatedDownFusion', dict(channels=0), 'channels'),
])
def test_bad_arguments(kind, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(kind, **kwargs)


@pytest.mark.parametrize('kind', ['GatedFusion', 'GatedDownFusion'])
def test_bad_shapes(kind):
    fusion = build(kind).eval()
    q = torch.randn(1, 6, 4, 4)
    with pytest.raises(ValueError, match='`memory`'):
        fusion(q, torch.randn(1, 5, 4, 4))
    with pytest.raises(ValueError, match='`query`'):
        fusion(torch.randn(1, 7, 4, 4), torch.randn(1, 6, 4, 4))
    with pytest.raises(ValueError, match='spatial size'):
        fusion(q, torch.randn(1, 6, 4, 5))
