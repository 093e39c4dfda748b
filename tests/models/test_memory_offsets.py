"""Memory offsets of VideoEncoderDecoder: the streaming step keeps the newest
max(|offset|) frames in a memory of one shape, reads the frames at the
offsets that exist, and the neck leaves the missing ones out of the one
softmax."""
import pytest
import torch
from mmengine import ConfigDict
from mmseg.registry import MODELS

import lma_mmseg  # noqa: F401  (registers the components)
from helpers.tiny_models import lma_model_cfg, randomise_bn, tiny_neck
from lma_mmseg.apis import StreamingSegmenter
from lma_mmseg.models import FrameMemory, StreamMemory
from lma_mmseg.ops import ATTENTION_IMPLS


def build(offsets=None, **neck):
    cfg = lma_model_cfg(len(offsets) if offsets else 3)
    if offsets is not None:
        cfg['memory_offsets'] = offsets
    cfg['neck'].update(neck)
    model = MODELS.build(cfg)
    model.test_cfg = ConfigDict(model.test_cfg)
    randomise_bn(model)
    if model.neck.position_bias is not None:
        with torch.no_grad():
            model.neck.position_bias.normal_(0, 1)
    return model.eval()


def clip_of(frames, t, offsets):
    """Frames t + offset that exist, then t, as a clip (B, n, 3, H, W)."""
    kept = [t + o for o in offsets if t + o >= 0]
    return frames[kept + [t]].transpose(0, 1)


def test_offsets_are_stated_once_and_checked():
    model = build((-9, -6, -3))
    assert model.memory_offsets == (-9, -6, -3)
    # the neck's memory_length follows the offsets when left out
    assert model.neck.memory_length == model.memory_length == 3
    assert model.memory_span == 9
    # without offsets: the previous memory_length frames
    assert build().memory_offsets == (-3, -2, -1)
    cfg = lma_model_cfg(2)
    cfg['memory_offsets'] = (-9, -6, -3)
    with pytest.raises(ValueError) as err:
        MODELS.build(cfg)
    assert 'memory_offsets=(-9, -6, -3)' in str(err.value)
    assert 'memory_length=2' in str(err.value)
    for bad, match in (((-3, -6), 'oldest first'), ((-2, -2), 'distinct'),
                       ((-1, 0), 'negative'), ((), 'at least one'),
                       ('-1', 'sequence'), ((-1.0, ), 'negative int')):
        cfg = lma_model_cfg(max(len(bad), 1))
        cfg['memory_offsets'] = bad
        with pytest.raises(ValueError, match=match):
            MODELS.build(cfg)


@pytest.mark.parametrize('offsets, neck', [
    ((-5, -3, -2), dict(position_bias=True)),
    ((-4, -1), dict(empty_memory='zeros', padding='mask')),
])
def test_step_reads_the_frames_that_exist(offsets, neck):
    """From the first frame on: the step equals clip mode on the frames at
    the offsets that exist (none on frame 0), in a memory of one shape."""
    torch.manual_seed(0)
    model = build(offsets, **neck)
    frames = torch.randn(8, 2, 3, 40, 48)  # 8 steps, B=2 streams
    span = -offsets[0]
    memory = None
    with torch.no_grad():
        for t in range(len(frames)):
            logits, memory = model.step(frames[t], memory)
            assert isinstance(memory, StreamMemory)
            assert memory.keys.shape == (2, span, 8, 5, 6)
            assert memory.values.shape == (2, span, 16, 5, 6)
            assert memory.count.dtype == torch.int64
            assert memory.num_frames == min(t + 1, span)
            clip = clip_of(frames, t, offsets)
            expected = model.encode_decode(clip, model._default_metas(clip))
            torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
        # the newest frame is the last slot
        keys, _ = model.neck.encode_memory(model.encode_frames(frames[-1]))
        torch.testing.assert_close(memory.keys[:, -1], keys)
        # slide mode: one memory per window, the same frames read
        model.test_cfg = ConfigDict(
            mode='slide', crop_size=(40, 32), stride=(24, 16))
        memory = None
        for t in range(len(frames)):
            logits, memory = model.step(frames[t], memory)
        assert len(memory) == 2
        assert all(m.keys.shape == (2, span, 8, 5, 4) for m in memory)
        clip = clip_of(frames, len(frames) - 1, offsets)
        expected = model.slide_inference(clip, model._default_metas(clip))
        torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


def test_empty_memory_is_the_memory_a_stream_starts_from():
    model = build((-4, -2))
    frames = torch.randn(3, 1, 3, 40, 48)
    with torch.no_grad():
        empty = model.empty_memory(frames[0])
        assert empty.keys.shape == (1, 4, 8, 5, 6)
        assert not empty.keys.any() and not empty.values.any()
        assert empty.count.shape == () and int(empty.count) == 0
        a, memory_a = model.step(frames[0], empty)
        b, memory_b = model.step(frames[0], None)
        assert torch.equal(a, b)
        for x, y in zip(memory_a, memory_b):
            assert torch.equal(x, y)
        # a memory of another stream size is refused, naming the shapes
        with pytest.raises(ValueError, match=r'memory keys .*\(B=1, K>=4'):
            model.step(torch.randn(1, 3, 48, 48), memory_a)
        with pytest.raises(ValueError, match='StreamMemory'):
            model.step(frames[1], FrameMemory(*memory_a[:2]))
        with pytest.raises(ValueError, match='count'):
            model.step(frames[1], memory_a._replace(count=torch.zeros(1)))


@pytest.mark.parametrize('attn_impl', list(ATTENTION_IMPLS))
@pytest.mark.parametrize('padding', ['zeros', 'mask'])
def test_neck_leaves_invalid_frames_out_of_the_softmax(attn_impl, padding):
    torch.manual_seed(1)
    neck = MODELS.build(
        tiny_neck(
            memory_length=3,
            position_bias=True,
            padding=padding,
            attn_impl=attn_impl,
            fusion=dict(type='GatedFusion'))).eval()
    with torch.no_grad():
        neck.position_bias.normal_(0, 1)
    feat = torch.randn(2, 64, 5, 6)
    keys = torch.randn(2, 3, 8, 5, 6) * 3
    values = torch.randn(2, 3, 16, 5, 6)
    memory = FrameMemory(keys, values)
    query = neck.query_key(feat)
    with torch.no_grad():
        for mask in ([True, False, True], [False, False, True],
                     [True, True, True]):
            valid = torch.tensor(mask)
            got = neck.read_memory(query, memory, valid)
            # the valid frames alone, with their own position bias rows
            expected = ATTENTION_IMPLS[attn_impl](
                query, keys[:, valid], values[:, valid], window=5,
                padding=padding, bias=neck.position_bias[valid])
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        # no valid frame: the empty memory's result, without NaN
        none = torch.zeros(3, dtype=torch.bool)
        assert not neck.read_memory(query, memory, none).any()
        out = neck(feat, memory, none)
        assert torch.equal(out, neck(feat, None))
        neck.empty_memory = 'zeros'
        torch.testing.assert_close(neck(feat, memory, none), neck(feat, None))
        with pytest.raises(ValueError, match=r'valid.*\(T=3, \)'):
            neck(feat, memory, torch.ones(2, dtype=torch.bool))


def test_compiled_step_compiles_once():
    """A stream that starts from an empty memory: one graph for every frame
    (a counting backend records each compilation)."""
    model = build((-4, -2, -1))
    frames = torch.randn(6, 1, 3, 40, 48)
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(
        model.step, backend=counting_backend, fullgraph=True)
    with torch.no_grad():
        memory, eager_memory = model.empty_memory(frames[0]), None
        for frame in frames:
            logits, memory = compiled(frame, memory)
            expected, eager_memory = model.step(frame, eager_memory)
            torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    assert len(graphs) == 1
    # StreamingSegmenter starts each stream of a compiled step from the
    # empty memory: one graph, over a reset too
    torch._dynamo.reset()
    graphs.clear()
    seg = StreamingSegmenter(
        model,
        step_fn=torch.compile(
            model.step, backend=counting_backend, fullgraph=True))
    for _ in range(2):
        got = [seg.step(frame) for frame in frames[:4]]
        seg.reset()
    torch.testing.assert_close(got[-1], expected_stream(model, frames[:4]),
                               atol=1e-5, rtol=0)
    assert len(graphs) == 1
    torch._dynamo.reset()


def expected_stream(model, frames):
    """Logits of the last frame of an eager stream."""
    memory = None
    with torch.no_grad():
        for frame in frames:
            logits, memory = model.step(frame, memory)
    return logits
