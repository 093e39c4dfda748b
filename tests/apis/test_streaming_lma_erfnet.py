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

    for t in range(memory_length, len(frames)):
        clip = np.stack(frames[t - memory_length:t + 1])  # (T+1, H, W, 3)
        clip = torch.from_numpy(clip).permute(0, 3, 1, 2).contiguous()
        data = model.data_preprocessor(dict(inputs=[clip]), False)
        assert data['inputs'].shape == (1, memory_length + 1, 3, H, W)
        with torch.no_grad():
            expected = model.predict(data['inputs'])[0].seg_logits.data
        got = streamed[t].seg_logits.data
        assert got.shape == (19, H, W)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
