"""The match-quality input of the fusion: LocalMemoryNeck(match_quality=
'lse') gives the gates the attention's log-normaliser."""
import math

import pytest
import torch
import torch.nn as nn
from mmseg.registry import MODELS

import lma_mmseg  # noqa: F401  (registers the components)
from lma_mmseg.models.necks.utils import FusionBase
from lma_mmseg.ops import local_attention_reference


def build_neck(fusion=dict(type='GatedFusion'), **kwargs):
    cfg = dict(
        type='LocalMemoryNeck',
        in_channels=8,
        key_channels=4,
        value_channels=6,
        window=3,
        match_quality='lse',
        fusion=fusion)
    cfg.update(kwargs)
    torch.manual_seed(0)
    return MODELS.build(cfg).eval()


def memory_of(neck, feats):
    keys, values = neck.encode_memory(feats.flatten(0, 1))
    return keys.unflatten(0, feats.shape[:2]), values.unflatten(
        0, feats.shape[:2])


@pytest.mark.parametrize('attn_impl', ['fused', 'unfused', 'reference'])
@pytest.mark.parametrize('padding', ['zeros', 'mask'])
def test_quality_is_the_lse_over_a_uniform_softmax(attn_impl, padding):
    neck = build_neck(attn_impl=attn_impl, padding=padding)
    feats = torch.randn(2, 3, 8, 5, 7)
    keys, values = memory_of(neck, feats)
    query = neck.query_key(torch.randn(2, 8, 5, 7))
    readout, quality = neck.read_memory(query, (keys, values),
                                        return_quality=True)
    out, lse = local_attention_reference(
        query, keys, values, 3, padding=padding, return_lse=True)
    torch.testing.assert_close(readout, out, atol=1e-5, rtol=1e-5)
    assert quality.shape == (2, 1, 5, 7)
    torch.testing.assert_close(
        quality[:, 0], lse - math.log(3 * 9), atol=1e-5, rtol=1e-5)


def test_quality_counts_only_valid_frames_and_is_zero_without_one():
    neck = build_neck()
    feats = torch.randn(1, 3, 8, 4, 6)
    keys, values = memory_of(neck, feats)
    query = neck.query_key(torch.randn(1, 8, 4, 6))
    valid = torch.tensor([False, False, True])
    readout, quality = neck.read_memory(query, (keys, values), valid,
                                        return_quality=True)
    one_out, one_quality = neck.read_memory(
        query, (keys[:, 2:], values[:, 2:]), return_quality=True)
    torch.testing.assert_close(readout, one_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(quality, one_quality, atol=1e-4, rtol=1e-5)
    none = torch.zeros(3, dtype=torch.bool)
    readout, quality = neck.read_memory(query, (keys, values), none,
                                        return_quality=True)
    assert not readout.any() and not quality.any()
    # an empty memory reads zeros of both
    readout, quality = neck.read_memory(query, None, return_quality=True)
    assert quality.shape == (1, 1, 4, 6) and not quality.any()


@pytest.mark.parametrize('fusion', [
    dict(type='GatedFusion', gate_channels=6),
    dict(type='GatedDownFusion', channels=4)
])
def test_fusion_starts_as_without_the_quality_and_learns_it(fusion):
    fuse = MODELS.build(
        dict(fusion, query_channels=6, memory_channels=6, out_channels=6,
             quality_channels=1)).eval()
    fuse.init_weights()
    query, memory = torch.randn(2, 6, 5, 7), torch.randn(2, 6, 5, 7)
    low, high = torch.full((2, 1, 5, 7), -3.0), torch.randn(2, 1, 5, 7)
    # zero weights on the quality at init: the quality changes nothing
    torch.testing.assert_close(
        fuse(query, memory, low), fuse(query, memory, high), atol=0, rtol=0)
    # ... and they get a gradient, so training can use it
    fuse.train()
    fuse(query, memory, high).square().mean().backward()
    if fusion['type'] == 'GatedFusion':
        weight, columns = fuse.gates.weight, slice(-1, None)
    else:
        weight, columns = fuse.quality_down.weight, slice(None)
    assert weight.grad[:, columns].abs().sum() > 0
    with torch.no_grad():
        weight[:, columns] = 0.5
    fuse.eval()
    assert not torch.allclose(
        fuse(query, memory, low), fuse(query, memory, high))


def test_neck_with_quality_trains_and_matches_without_it_at_init():
    plain = build_neck(match_quality=None, residual=True)
    neck = build_neck(residual=True)
    feats = torch.randn(2, 3, 8, 5, 7)
    with torch.no_grad():
        neck.residual_scale.fill_(0.3)
        plain.residual_scale.fill_(0.3)
    # the same weights but the quality columns of the gates
    state = plain.state_dict()
    for key, value in neck.state_dict().items():
        if key == 'fusion.gates.weight':
            value[:, :-1] = state[key]
        elif key in state:
            value.copy_(state[key])
    memory = memory_of(neck, feats[:, :2])
    frame = feats[:, 2]
    torch.testing.assert_close(
        neck(frame, memory), plain(frame, memory), atol=1e-5, rtol=1e-5)
    neck.train()
    neck(frame, memory).square().mean().backward()
    assert neck.fusion.gates.weight.grad[:, -1].abs().sum() > 0
    assert neck.query_key.weight.grad.abs().sum() > 0


def test_neck_with_quality_in_one_graph():
    """The neck with the quality input and a validity mask in one graph
    (the graph a compiled or exported step holds)."""
    neck = build_neck()
    feats = torch.randn(1, 3, 8, 5, 7)
    memory = memory_of(neck, feats)
    frame = torch.randn(1, 8, 5, 7)
    valid = torch.tensor([False, True, True])
    compiled = torch.compile(neck, fullgraph=True, backend='aot_eager')
    with torch.no_grad():
        torch.testing.assert_close(
            compiled(frame, memory, valid), neck(frame, memory, valid),
            atol=1e-5, rtol=1e-5)


def test_bad_quality_settings_are_named():
    with pytest.raises(ValueError, match='match_quality'):
        build_neck(match_quality='max')

    @MODELS.register_module(force=True)
    class QualityBlindFusion(FusionBase):

        def __init__(self, query_channels, memory_channels, out_channels):
            super().__init__(query_channels, memory_channels, out_channels)
            self.proj = nn.Conv2d(query_channels, out_channels, 1)

        def forward(self, query, memory):
            return self.proj(query + memory)

    try:
        with pytest.raises(ValueError, match='QualityBlindFusion'):
            build_neck(fusion=dict(type='QualityBlindFusion'))
    finally:
        MODELS.module_dict.pop('QualityBlindFusion')
    fuse = MODELS.build(
        dict(type='GatedFusion', query_channels=6, memory_channels=6,
             out_channels=6, quality_channels=1))
    query = torch.randn(1, 6, 3, 4)
    with pytest.raises(ValueError, match='quality'):
        fuse(query, query)
    with pytest.raises(ValueError, match=r'\(1, 1, 3, 4\)'):
        fuse(query, query, torch.zeros(1, 2, 3, 4))
    plain = MODELS.build(
        dict(type='GatedFusion', query_channels=6, memory_channels=6,
             out_channels=6))
    with pytest.raises(ValueError, match='quality_channels=0'):
        plain(query, query, torch.zeros(1, 1, 3, 4))
