"""Streaming LMA-ERFNet (the project's model config) equals clip-mode
predict through the video data preprocessor."""
import os.path as osp

import numpy as np
import torch
from mmengine import Config

from helpers.tiny_models import randomise_bn
from lma_mmseg.apis import StreamingSegmenter, init_model

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MODEL_CFG = osp.join(ROOT, 'configs/_base_/models/lma-erfnet.py')
SINGLE_CFG = osp.join(ROOT, 'configs/_base_/models/erfnet-split.py')
H, W = 64, 128


def lma_erfnet_config() -> Config:
    cfg = Config.fromfile(MODEL_CFG)
    cfg.default_scope = 'mmseg'
    # the clip test pipeline of the demo dataset config
    cfg.test_pipeline = [
        dict(type='LoadClipFromFiles'),
        dict(type='PackClipSegInputs'),
    ]
    return cfg


def test_streaming_lma_erfnet_equals_clip_predict():
    model = init_model(lma_erfnet_config(), device='cpu')
    assert type(model.data_preprocessor).__name__ == \
        'VideoSegDataPreProcessor'
    randomise_bn(model, seed=1)
    memory_length = model.neck.memory_length
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    frames = [np.roll(base, 3 * t, axis=1) for t in range(memory_length + 2)]

    seg = StreamingSegmenter(model)
    calls = []
    handle = model.backbone.register_forward_hook(
        lambda m, args, out: calls.append(args[0].shape[0]))
    streamed = [seg(frame) for frame in frames]
    handle.remove()
    assert calls == [1] * len(frames)

    # from the first frame on: the previous T frames that exist
    for t in range(len(frames)):
        first = max(0, t - memory_length)
        clip = np.stack(frames[first:t + 1])  # (T+1, H, W, 3) from frame T
        clip = torch.from_numpy(clip).permute(0, 3, 1, 2).contiguous()
        data = model.data_preprocessor(dict(inputs=[clip]), False)
        assert data['inputs'].shape == (1, t + 1 - first, 3, H, W)
        with torch.no_grad():
            expected = model.predict(data['inputs'])[0].seg_logits.data
        got = streamed[t].seg_logits.data
        assert got.shape == (19, H, W)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_streaming_lma_erfnet_slide_equals_clip_predict():
    cfg = lma_erfnet_config()
    cfg.model.test_cfg = dict(mode='slide', crop_size=(64, 64),
                              stride=(32, 48))
    model = init_model(cfg, device='cpu')
    randomise_bn(model, seed=2)
    memory_length = model.memory_length
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    frames = [np.roll(base, 2 * t, axis=0) for t in range(memory_length + 1)]
    seg = StreamingSegmenter(model)
    streamed = [seg(frame) for frame in frames]
    # one memory per window: 1 x 3 windows of 64x64
    assert isinstance(seg.memory, tuple) and len(seg.memory) == 3
    assert seg.memory_size == memory_length
    clip = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)
    data = model.data_preprocessor(dict(inputs=[clip.contiguous()]), False)
    with torch.no_grad():
        expected = model.predict(data['inputs'])[0].seg_logits.data
    torch.testing.assert_close(
        streamed[-1].seg_logits.data, expected, atol=1e-4, rtol=0)


def test_first_frame_equals_single_frame_erfnet(tmp_path):
    """With empty_memory='skip' the first frame of a stream (and a lone
    image) is segmented exactly as the single-frame ERFNet whose encoder
    and decoder the LMA model loaded."""
    single_cfg = Config.fromfile(SINGLE_CFG)
    single_cfg.default_scope = 'mmseg'
    single = init_model(single_cfg, device='cpu')
    randomise_bn(single, seed=3)
    ckpt = tmp_path / 'erfnet.pth'
    torch.save(dict(state_dict=single.state_dict()), ckpt)
    lma = init_model(lma_erfnet_config(), str(ckpt), device='cpu')
    assert lma.neck.empty_memory == 'skip'
    rng = np.random.default_rng(4)
    frame = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    got = StreamingSegmenter(lma)(frame)
    expected = StreamingSegmenter(single)(frame)
    assert torch.equal(got.pred_sem_seg.data, expected.pred_sem_seg.data)
    torch.testing.assert_close(
        got.seg_logits.data, expected.seg_logits.data, atol=1e-5, rtol=0)
    # the second frame reads the memory: the fusion runs
    seg = StreamingSegmenter(lma)
    seg(frame)
    second = seg(np.roll(frame, 5, axis=1))
    lone = StreamingSegmenter(single)(np.roll(frame, 5, axis=1))
    assert (second.seg_logits.data - lone.seg_logits.data).abs().max() > 1e-3


def test_residual_neck_starts_as_the_single_frame_model(tmp_path):
    """With residual=True the untrained LMA model predicts clips exactly
    as the single-frame ERFNet whose weights it loaded; the residual scale
    gets a gradient, so training moves it away from the identity."""
    single_cfg = Config.fromfile(SINGLE_CFG)
    single_cfg.default_scope = 'mmseg'
    single = init_model(single_cfg, device='cpu')
    randomise_bn(single, seed=5)
    ckpt = tmp_path / 'erfnet.pth'
    torch.save(dict(state_dict=single.state_dict()), ckpt)
    lma = init_model(
        lma_erfnet_config(),
        str(ckpt),
        device='cpu',
        cfg_options={'model.neck.residual': True})
    assert lma.neck.residual and not lma.neck.residual_scale.any()
    clip = torch.randn(2, 4, 3, H, W)
    with torch.no_grad():
        got = lma.predict(clip)
        expected = single.predict(clip[:, -1])
    for a, b in zip(got, expected):
        assert torch.equal(a.seg_logits.data, b.seg_logits.data)
    lma.train()
    lma.decode_head.forward(lma.extract_feat(clip)).square().mean().backward()
    assert lma.neck.residual_scale.grad.abs().sum() > 0
