"""LocalMemoryNeck: arguments, key/value heads, memory read-out, fusion."""
import pytest
import torch
from mmseg.registry import MODELS

import lma_mmseg  # noqa: F401  (registers the components)


def build(**kwargs):
    cfg = dict(
        type='LocalMemoryNeck',
        in_channels=8,
        key_channels=4,
        value_channels=6,
        window=5)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def brute_force_readout(q, keys, values, window, dilation, scale, padding):
    """Loop version of the memory read: one softmax over all T*P*P
    positions; 'zeros': outside positions have logit 0 and value 0,
    'mask': they are left out."""
    B, C, H, W = q.shape
    T, Cv = keys.shape[1], values.shape[2]
    r = window // 2
    out = torch.zeros(B, Cv, H, W, dtype=q.dtype)
    for b in range(B):
        for y in range(H):
            for x in range(W):
                logits, vals = [], []
                for t in range(T):
                    for dy in range(-r, r + 1):
                        for dx in range(-r, r + 1):
                            yy, xx = y + dy * dilation, x + dx * dilation
                            if 0 <= yy < H and 0 <= xx < W:
                                logits.append(scale * torch.dot(
                                    q[b, :, y, x], keys[b, t, :, yy, xx]))
                                vals.append(values[b, t, :, yy, xx])
                            elif padding == 'zeros':
                                logits.append(q.new_zeros(()))
                                vals.append(q.new_zeros(Cv))
                weights = torch.softmax(torch.stack(logits), 0)
                out[b, :, y, x] = (weights[:, None] *
                                   torch.stack(vals)).sum(0)
    return out


@pytest.mark.parametrize('padding,window,dilation,scale', [
    ('zeros', 3, 2, 0.5),
    ('zeros', 5, 1, 1.0),
    ('mask', 3, 1, 2.0),
])
def test_read_memory_matches_brute_force(padding, window, dilation, scale):
    torch.manual_seed(0)
    neck = build(
        window=window, dilation=dilation, scale=scale, padding=padding)
    q = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    keys = torch.randn(2, 3, 4, 5, 6, dtype=torch.float64)
    values = torch.randn(2, 3, 6, 5, 6, dtype=torch.float64)
    got = neck.read_memory(q, (keys, values))
    expected = brute_force_readout(q, keys, values, window, dilation, scale,
                                   padding)
    torch.testing.assert_close(got, expected, atol=1e-8, rtol=1e-8)


def test_heads_and_forward():
    torch.manual_seed(1)
    neck = build(in_index=1).eval()
    # query key head initialised equal to the memory key head, not shared
    assert torch.equal(neck.query_key.weight, neck.memory_key.weight)
    assert torch.equal(neck.query_key.bias, neck.memory_key.bias)
    assert neck.query_key.weight is not neck.memory_key.weight
    assert neck.memory_key.kernel_size == (3, 3)
    assert neck.query_value.weight.shape == (6, 8, 3, 3)
    assert not torch.equal(neck.query_value.weight, neck.memory_value.weight)
    neck.init_weights()
    assert torch.equal(neck.query_key.weight, neck.memory_key.weight)

    other = torch.randn(2, 3, 16, 16)
    feat = torch.randn(2, 8, 8, 8)
    mem_feats = torch.randn(2 * 3, 8, 8, 8)
    keys, values = neck.encode_memory((other, mem_feats))
    assert keys.shape == (6, 4, 8, 8) and values.shape == (6, 6, 8, 8)
    memory = (keys.unflatten(0, (2, 3)), values.unflatten(0, (2, 3)))
    out = neck([other, feat], memory=memory)
    assert isinstance(out, tuple) and len(out) == 2
    assert out[0] is other  # other outputs pass through
    assert out[1].shape == feat.shape
    readout = neck.read_memory(neck.query_key(feat), memory)
    expected = neck.fusion(neck.query_value(feat), readout)
    torch.testing.assert_close(out[1], expected)
    # the memory changes the result
    assert not torch.allclose(out[1], neck([other, feat])[1])
    # a lone tensor in, a tensor out
    assert torch.equal(neck(feat, memory=memory), out[1])


def test_empty_memory_zeros_mode_is_a_zero_readout():
    torch.manual_seed(2)
    neck = build(empty_memory='zeros').eval()
    feat = torch.randn(1, 8, 6, 6)
    expected = neck.fusion(neck.query_value(feat), torch.zeros(1, 6, 6, 6))
    torch.testing.assert_close(neck(feat), expected)
    empty = (torch.zeros(1, 0, 4, 6, 6), torch.zeros(1, 0, 6, 6, 6))
    torch.testing.assert_close(neck(feat, memory=empty), expected)


def test_empty_memory_skips_the_fusion_by_default():
    torch.manual_seed(2)
    neck = build().eval()
    assert neck.empty_memory == 'skip'
    feat = torch.randn(1, 8, 6, 6)
    assert neck(feat) is feat
    empty = (torch.zeros(1, 0, 4, 6, 6), torch.zeros(1, 0, 6, 6, 6))
    assert neck(feat, memory=empty) is feat
    other = torch.randn(1, 3, 12, 12)
    outs = neck([other, feat])
    assert isinstance(outs, tuple) and outs[0] is other and outs[1] is feat
    # with a memory the fusion runs and changes the map
    keys, values = neck.encode_memory(torch.randn(2, 8, 6, 6))
    memory = neck.push_memory(None, keys[None], values[None])
    assert not torch.allclose(neck(feat, memory=memory), feat)


def test_push_memory_is_a_fifo():
    neck = build()
    keys = [torch.full((2, 1, 4, 3, 3), float(i)) for i in range(5)]
    values = [torch.full((2, 1, 6, 3, 3), -float(i)) for i in range(5)]
    memory = None
    for i in range(5):
        memory = neck.push_memory(memory, keys[i], values[i], max_length=3)
        assert memory.num_frames == min(i + 1, 3)
    assert memory.keys[:, :, 0, 0, 0].tolist() == [[2, 3, 4]] * 2
    assert memory.values[:, :, 0, 0, 0].tolist() == [[-2, -3, -4]] * 2
    both = neck.push_memory(None, torch.cat(keys, 1), torch.cat(values, 1))
    assert both.num_frames == 5
    with pytest.raises(ValueError, match='memory keys must have shape'):
        neck.push_memory(memory, torch.zeros(1, 1, 4, 3, 3),
                         torch.zeros(1, 1, 6, 3, 3))
    with pytest.raises(ValueError, match='same B and n'):
        neck.push_memory(None, torch.zeros(2, 2, 4, 3, 3),
                         torch.zeros(2, 1, 6, 3, 3))


def test_raw_feature_values():
    torch.manual_seed(3)
    neck = build(value_channels=None, fusion=dict(
        type='GatedDownFusion', channels=4)).eval()
    assert isinstance(neck.memory_value, torch.nn.Identity)
    assert isinstance(neck.query_value, torch.nn.Identity)
    assert neck.fusion.query_channels == 8 and neck.fusion.out_channels == 8
    feats = torch.randn(3, 8, 5, 5)
    keys, values = neck.encode_memory(feats)
    assert torch.equal(values, feats)
    out = neck(feats[:1], memory=(keys[None, 1:], values[None, 1:]))
    assert out.shape == (1, 8, 5, 5)


def test_gradients_reach_every_head():
    torch.manual_seed(4)
    neck = build().train()
    feat = torch.randn(2, 8, 6, 6)
    keys, values = neck.encode_memory(torch.randn(4, 8, 6, 6))
    out = neck(feat, memory=(keys.unflatten(0, (2, 2)),
                             values.unflatten(0, (2, 2))))
    out.square().mean().backward()
    for name, p in neck.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize('kwargs,match', [
    (dict(window=4), 'window'),
    (dict(window=0), 'window'),
    (dict(dilation=0), 'dilation'),
    (dict(key_channels=0), 'key_channels'),
    (dict(value_channels=0), 'value_channels'),
    (dict(value_channels=-3), 'value_channels'),
    (dict(in_channels=0), 'in_channels'),
    (dict(padding='reflect'), 'padding'),
    (dict(scale=0.0), 'scale'),
    (dict(memory_length=0), 'memory_length'),
    (dict(empty_memory='drop'), 'empty_memory'),
    (dict(in_index='last'), 'in_index'),
    (dict(fusion='GatedFusion'), 'fusion'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(**kwargs)


def test_bad_inputs():
    neck = build(in_index=2).eval()
    feat = torch.randn(1, 8, 4, 4)
    with pytest.raises(ValueError, match=r'`in_index`=2 .* 2 output'):
        neck((feat, feat))
    neck = build().eval()
    with pytest.raises(ValueError, match=r'in_channels=8.*\(1, 7, 4, 4\)'):
        neck(torch.randn(1, 7, 4, 4))
    with pytest.raises(ValueError, match='memory keys'):
        neck(feat, memory=(torch.randn(1, 2, 4, 5, 4),
                           torch.randn(1, 2, 6, 4, 4)))
    with pytest.raises(ValueError, match='memory values'):
        neck(feat, memory=(torch.randn(1, 2, 4, 4, 4),
                           torch.randn(1, 3, 6, 4, 4)))
    with pytest.raises(TypeError, match='memory'):
        neck(feat, memory=torch.randn(1, 2, 4, 4, 4))


def test_residual_is_identity_at_init():
    torch.manual_seed(6)
    neck = build(residual=True).eval()
    feat = torch.randn(2, 8, 6, 6)
    keys, values = neck.encode_memory(torch.randn(4, 8, 6, 6))
    memory = neck.push_memory(None, keys.unflatten(0, (2, 2)),
                              values.unflatten(0, (2, 2)))
    assert torch.equal(neck(feat, memory=memory), feat)
    with torch.no_grad():
        neck.residual_scale.fill_(0.5)
    fused = neck.fusion(neck.query_value(feat),
                        neck.read_memory(neck.query_key(feat), memory))
    torch.testing.assert_close(neck(feat, memory=memory), feat + 0.5 * fused)
    with pytest.raises(ValueError, match='residual'):
        build(residual='yes')


def test_key_gate_lowers_the_key_frames_share():
    torch.manual_seed(8)
    neck = build(residual=True, key_gate=True).eval()
    feat = torch.randn(2, 8, 6, 6)
    keys, values = neck.encode_memory(torch.randn(4, 8, 6, 6))
    memory = neck.push_memory(None, keys.unflatten(0, (2, 2)),
                              values.unflatten(0, (2, 2)))
    # identity at init, and the gate's scale learns from there
    assert not neck.key_gate_scale.any()
    assert torch.equal(neck(feat, memory=memory), feat)
    neck.train()
    neck(feat, memory=memory).sum().backward()
    assert neck.key_gate_scale.grad.abs().sum() > 0
    neck.eval()
    with torch.no_grad():
        neck.residual_scale.fill_(0.5)
        neck.key_gate_scale.fill_(0.8)
        fused = neck.fusion(neck.query_value(feat),
                            neck.read_memory(neck.query_key(feat), memory))
        kappa = 0.8 * torch.sigmoid(neck.key_gate_conv(fused))
        expected = feat * (1 - kappa) + 0.5 * fused
        torch.testing.assert_close(neck(feat, memory=memory), expected)
        # one weight per pixel, between 0 and the scale
        assert kappa.shape == (2, 1, 6, 6)
        assert 0 < kappa.min() and kappa.max() < 0.8
        # an empty memory skips the fusion: the frame passes unchanged
        assert torch.equal(neck(feat, memory=None), feat)
    with pytest.raises(ValueError, match='needs residual=True'):
        build(key_gate=True)
    with pytest.raises(ValueError, match='key_gate'):
        build(residual=True, key_gate=1)


def test_position_bias():
    from lma_mmseg.ops import local_attention_reference
    torch.manual_seed(7)
    neck = build(position_bias=True, memory_length=3).eval()
    plain = build(memory_length=3).eval()
    plain.load_state_dict(
        {k: v
         for k, v in neck.state_dict().items() if k != 'position_bias'})
    assert neck.position_bias.shape == (3, 25) and not neck.position_bias.any()
    feat = torch.randn(2, 8, 6, 6)
    keys, values = neck.encode_memory(torch.randn(6, 8, 6, 6))
    memory = neck.push_memory(None, keys.unflatten(0, (2, 3)),
                              values.unflatten(0, (2, 3)))
    # zero at init: the paper's attention
    torch.testing.assert_close(neck(feat, memory=memory),
                               plain(feat, memory=memory))
    with torch.no_grad():
        neck.position_bias.normal_(0, 2)
    query = neck.query_key(feat)
    for num in (3, 2, 1):  # a shorter memory uses the most recent rows
        short = neck.push_memory(None, memory.keys[:, -num:],
                                 memory.values[:, -num:])
        expected = local_attention_reference(
            query, short.keys, short.values, window=5,
            bias=neck.position_bias[3 - num:])
        torch.testing.assert_close(
            neck.read_memory(query, short), expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(
        neck.read_memory(query, memory), plain.read_memory(query, memory))
    neck.train()
    neck(feat, memory=memory).square().mean().backward()
    assert neck.position_bias.grad.abs().sum() > 0
    longer = neck.push_memory(memory, memory.keys[:, :1],
                              memory.values[:, :1])
    with pytest.raises(ValueError, match='memory_length=3 rows'):
        neck.read_memory(query, longer)
    with pytest.raises(ValueError, match='position_bias'):
        build(position_bias=1)


@pytest.mark.parametrize('padding', ['zeros', 'mask'])
def test_attn_impl_switch(padding):
    """'fused', 'unfused' and 'reference' read the same memory; the choice
    changes no parameter."""
    torch.manual_seed(8)
    necks = {
        impl: build(attn_impl=impl, padding=padding, position_bias=True,
                    dilation=2).double().eval()
        for impl in ('fused', 'unfused', 'reference')
    }
    assert build().attn_impl == 'fused'  # the default
    state = necks['fused'].state_dict()
    with torch.no_grad():
        state['position_bias'].normal_(0, 1)
    query = torch.randn(2, 4, 5, 7, dtype=torch.float64)
    memory = (torch.randn(2, 3, 4, 5, 7, dtype=torch.float64),
              torch.randn(2, 3, 6, 5, 7, dtype=torch.float64))
    readouts = {}
    for impl, neck in necks.items():
        neck.load_state_dict(state, strict=True)
        assert neck.attn_impl == impl
        readouts[impl] = neck.read_memory(query, memory)
    for impl in ('fused', 'unfused'):
        torch.testing.assert_close(
            readouts[impl], readouts['reference'], atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match='`attn_impl` must be one of'):
        build(attn_impl='flash')
    with pytest.raises(ValueError, match='attn_impl'):
        build(attn_impl=None)


@pytest.mark.parametrize('match_quality', [None, 'lse'])
def test_forward_returns_the_readout_on_request(match_quality):
    torch.manual_seed(0)
    neck = build(residual=True, match_quality=match_quality).eval()
    feat = torch.randn(2, 8, 6, 7)
    memory = (torch.randn(2, 3, 4, 6, 7), torch.randn(2, 3, 6, 6, 7))
    with torch.no_grad():
        neck.residual_scale.fill_(0.5)
        out, readout = neck(feat, memory=memory, return_readout=True)
        # the same output as without the read-out
        torch.testing.assert_close(out, neck(feat, memory=memory))
        expected = neck.read_memory(neck.query_key(feat), memory)
    torch.testing.assert_close(readout, expected)
    assert readout.shape == (2, 6, 6, 7)
    # a tuple of backbone outputs: the tuple and the read-out
    with torch.no_grad():
        outs, readout = neck((feat, ), memory=memory, return_readout=True)
    assert isinstance(outs, tuple) and len(outs) == 1
    torch.testing.assert_close(outs[0], out)
    # the fusion is skipped for an empty memory: no read-out
    out, readout = neck(feat, memory=None, return_readout=True)
    assert readout is None and out is feat
