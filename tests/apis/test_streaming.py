"""StreamingSegmenter: equivalence with clip-mode predict, one encoding per
frame, memory handling, single-frame models and pipelines."""
import cv2
import numpy as np
import pytest
import torch

from helpers.tiny_models import (lma_model_cfg, make_config, randomise_bn,
                                 single_model_cfg)
from lma_mmseg.apis import StreamingSegmenter, frame_pipeline, init_model

H, W = 64, 80


def random_frames(num: int, seed: int = 0, shape=(H, W)):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    frames = []
    for t in range(num):
        # a moving scene: the base image shifted, plus noise
        frame = np.roll(base, 2 * t, axis=1).astype(np.int16)
        frame += rng.integers(-20, 21, frame.shape, dtype=np.int16)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


def normalised(model, frame: np.ndarray) -> torch.Tensor:
    """(1, 3, H, W) input of one frame through the model's preprocessor."""
    chw = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)
    return model.data_preprocessor(dict(inputs=[chw]), False)['inputs']


def clip_logits(model, frames) -> torch.Tensor:
    """Clip-mode predict (key frame last) -> logits (C, H, W)."""
    clip = torch.stack([normalised(model, f) for f in frames], dim=1)
    with torch.no_grad():
        return model.predict(clip)[0].seg_logits.data


def build(model_cfg, **pipeline):
    model = init_model(make_config(model_cfg, **pipeline), device='cpu')
    randomise_bn(model)
    return model


def count_backbone_images(model):
    """Count the images the backbone encodes (forward hook)."""
    seen = []
    handle = model.backbone.register_forward_hook(
        lambda module, args, out: seen.append(args[0].shape[0]))
    return seen, handle


@pytest.mark.parametrize('test_cfg, offsets', [
    (dict(mode='whole'), None),
    (dict(mode='slide', crop_size=(48, 48), stride=(32, 32)), None),
    (dict(mode='whole'), (-5, -3, -2)),
])
def test_streaming_equals_clip_predict(test_cfg, offsets):
    memory_length = 3
    cfg = lma_model_cfg(memory_length, test_cfg)
    if offsets is not None:
        cfg['memory_offsets'] = offsets
    model = build(cfg)
    offsets = offsets or (-3, -2, -1)
    assert model.memory_offsets == offsets
    frames = random_frames(7)
    seg = StreamingSegmenter(model)
    assert seg.memory_length == memory_length
    assert seg.memory_offsets == offsets
    seen, handle = count_backbone_images(model)
    streamed = [seg(frame) for frame in frames]
    handle.remove()

    windows = 1 if test_cfg['mode'] == 'whole' else 4
    # every frame (every window of it) goes through the backbone once
    assert sum(seen) == len(frames) * windows
    # the memory keeps max(|offset|) frames
    assert seg.memory_size == -offsets[0]
    for t, result in enumerate(streamed):
        # the frames at the offsets that exist, then frame t
        expected = clip_logits(
            model, [frames[t + o] for o in offsets if t + o >= 0] +
            [frames[t]])
        got = result.seg_logits.data
        assert got.shape == (5, H, W)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
        assert torch.equal(result.pred_sem_seg.data,
                           got.argmax(0, keepdim=True))
    # the memory matters: full-memory results differ from a lone frame
    lone = clip_logits(model, frames[-1:])
    assert (streamed[-1].seg_logits.data - lone).abs().max() > 1e-3


def test_reset_and_path_input(tmp_path):
    model = build(lma_model_cfg(2))
    frames = random_frames(4, seed=1)
    seg = StreamingSegmenter(model)
    for frame in frames:
        seg(frame)
    assert seg.memory_size == 2 and seg.num_frames == 4
    seg.reset()
    assert seg.memory_size == 0 and seg.num_frames == 0
    # the first frame after a reset is segmented as a lone image
    path = str(tmp_path / 'frame.png')
    assert cv2.imwrite(path, frames[2])
    from_path = seg(path)
    assert from_path.img_path == path
    torch.testing.assert_close(
        from_path.seg_logits.data,
        clip_logits(model, frames[2:3]),
        atol=1e-4,
        rtol=0)
    seg.reset()
    torch.testing.assert_close(
        seg(frames[2]).seg_logits.data,
        from_path.seg_logits.data,
        atol=1e-5,
        rtol=0)


def test_single_frame_segmentor():
    model = build(single_model_cfg())
    frames = random_frames(3, seed=2)
    seg = StreamingSegmenter(model)
    assert seg.memory_length == 0
    seen, handle = count_backbone_images(model)
    results = [seg(frame) for frame in frames]
    handle.remove()
    assert seen == [1, 1, 1]
    for frame, result in zip(frames, results):
        with torch.no_grad():
            expected = model.predict(normalised(
                model, frame))[0].seg_logits.data
        torch.testing.assert_close(
            result.seg_logits.data, expected, atol=1e-5, rtol=0)


def test_step_on_tensors_and_resize_pipeline():
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(40, 32), keep_ratio=False),
        dict(type='LoadAnnotations'),
        dict(type='PackSegInputs'),
    ]
    model = build(lma_model_cfg(2), test_pipeline=pipeline)
    seg = StreamingSegmenter(model)
    frame = random_frames(1, seed=3)[0]
    result = seg(frame)
    # resized as the pipeline says, results at the original size
    assert result.img_shape == (32, 40)
    assert result.ori_shape == (H, W)
    assert result.seg_logits.data.shape == (5, H, W)
    # the tensor-level step keeps its own memory the same way
    seg.reset()
    x = torch.randn(1, 3, 32, 40)
    logits = seg.step(x)
    assert logits.shape == (1, 5, 32, 40) and seg.memory_size == 1
    with pytest.raises(ValueError, match='reset'):
        seg.step(torch.randn(1, 3, 40, 40))
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        seg.step(torch.randn(3, 32, 40))


def test_bad_frames():
    model = build(lma_model_cfg(2))
    seg = StreamingSegmenter(model)
    with pytest.raises(ValueError, match='HxWx3'):
        seg(np.zeros((H, W), dtype=np.uint8))
    with pytest.raises(TypeError, match='path or an HxWx3'):
        seg(123)
    with pytest.raises(TypeError, match='segmentor'):
        StreamingSegmenter(torch.nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match='memory_offsets'):
        StreamingSegmenter(model, memory_offsets=(-1, 1))
    with pytest.raises(ValueError, match='needs a memory model'):
        StreamingSegmenter(build(single_model_cfg()), memory_offsets=(-1, ))


def test_frame_pipeline_from_clip_pipeline():
    clip_pipeline = [
        dict(type='LoadClipFromFiles', imdecode_backend='pillow'),
        dict(
            type='ClipTransformBroadcaster',
            mapping=dict(img='imgs'),
            transforms=[
                dict(type='Resize', scale=(2048, 1024), keep_ratio=True)
            ]),
        dict(type='LoadClipAnnotations'),
        dict(type='PackClipSegInputs', meta_keys=('img_path', 'ori_shape')),
    ]
    assert frame_pipeline(clip_pipeline, from_ndarray=True) == [
        dict(type='LoadImageFromNDArray', imdecode_backend='pillow'),
        dict(type='Resize', scale=(2048, 1024), keep_ratio=True),
        dict(type='PackSegInputs', meta_keys=('img_path', 'ori_shape')),
    ]
    assert frame_pipeline(None, from_ndarray=False) == [
        dict(type='LoadImageFromFile'),
        dict(type='PackSegInputs')
    ]
    single = [
        dict(type='LoadImageFromFile', imdecode_backend='cv2'),
        dict(type='mmseg.LoadAnnotations'),
        dict(type='PackSegInputs'),
    ]
    assert frame_pipeline(single, from_ndarray=True) == [
        dict(type='LoadImageFromNDArray', imdecode_backend='cv2'),
        dict(type='PackSegInputs'),
    ]
