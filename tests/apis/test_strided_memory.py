"""Strided memory offsets as the VSPW configs state them: the streaming step,
StreamingSegmenter, the exported program and the AOTInductor package read
the frames at (-9, -6, -3), as clip-mode predict does.

The model is configs/lma/lma-segformer_mit-b1_8xb2-160k_vspw-480x480.py with
a small MiT (one block per stage, 16 base channels), 64x64 frames and 5
classes, its neck weights perturbed so that the memory matters.
"""
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.model import revert_sync_batchnorm

from helpers import ROOT
from helpers.tiny_models import randomise_bn
from lma_mmseg.apis import StreamingSegmenter, init_model
from lma_mmseg.apis.export import (ExportedStreamer, export_step, load_step,
                                   load_step_info, zero_memory)

CONFIG = osp.join(ROOT,
                  'configs/lma/lma-segformer_mit-b1_8xb2-160k_vspw-480x480.py')
OFFSETS = (-9, -6, -3)
H = W = 64
NUM_FRAMES = 12
SMALL = {
    'model.data_preprocessor.size': (H, W),
    'model.backbone.embed_dims': 16,
    'model.backbone.num_layers': [1, 1, 1, 1],
    'model.decode_head.in_channels': [16, 32, 80, 128],
    'model.decode_head.channels': 16,
    'model.decode_head.num_classes': 5,
    'model.neck.in_channels': 128,
    'model.neck.key_channels': 8,
    'model.neck.fusion.channels': 16,
    # frames are given at the model's size: no resize
    'test_pipeline': [
        dict(type='LoadImageFromNDArray'),
        dict(type='PackSegInputs')
    ],
}


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    model = revert_sync_batchnorm(init_model(CONFIG, cfg_options=SMALL))
    randomise_bn(model, seed=1)
    model.dataset_meta = dict(
        classes=tuple('abcde'), palette=[[i, i, i] for i in range(5)])
    with torch.no_grad():  # memory heads and fusion far from their init
        for param in model.neck.parameters():
            param.add_(torch.randn_like(param) * 0.5)
    return model.eval()


@pytest.fixture(scope='module')
def frames():
    """A moving scene: a random image shifted by 3 px per frame, plus
    noise (H x W x 3 BGR uint8)."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    out = []
    for t in range(NUM_FRAMES):
        frame = np.roll(base, 3 * t, axis=1).astype(np.int16)
        frame += rng.integers(-20, 21, frame.shape, dtype=np.int16)
        out.append(np.clip(frame, 0, 255).astype(np.uint8))
    return out


def inputs_of(model, frames):
    """Preprocessed inputs: one frame (1, 3, H, W) per array given alone,
    a clip (1, T+1, 3, H, W) for a list."""
    clip = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)
    data = model.data_preprocessor(dict(inputs=[clip.contiguous()]), False)
    return data['inputs']


def clip_predict(model, frames, t, offsets=OFFSETS):
    """Clip-mode predict of frame t with the memory frames at offsets."""
    clip = inputs_of(model, [frames[t + o] for o in offsets] + [frames[t]])
    with torch.no_grad():
        return model.predict(clip)[0].seg_logits.data


def eager_stream(model, frames):
    """Logits of model.step over the stream, from an empty memory."""
    memory, out = None, []
    with torch.no_grad():
        for frame in frames:
            logits, memory = model.step(inputs_of(model, [frame])[:, 0],
                                        memory)
            out.append(logits)
    return out


def test_vspw_model_states_its_offsets(model):
    assert model.memory_offsets == OFFSETS
    assert model.memory_length == model.neck.memory_length == 3
    assert model.memory_span == 9
    cfg = model.cfg
    for split in ('train', 'val', 'test'):
        dataset = cfg[f'{split}_dataloader'].dataset
        assert tuple(dataset.frame_offsets) == OFFSETS, split


def test_streaming_reads_the_trained_offsets(model, frames):
    seg = StreamingSegmenter(model)
    streamed = [seg(frame).seg_logits.data for frame in frames]
    stepped = eager_stream(model, frames)
    assert seg.memory_size == 9
    for t in range(9, NUM_FRAMES):
        expected = clip_predict(model, frames, t)
        torch.testing.assert_close(streamed[t], expected, atol=1e-4, rtol=0)
        torch.testing.assert_close(
            stepped[t][0], expected, atol=1e-4, rtol=0)
        # the offsets matter: consecutive memory frames give other logits
        other = clip_predict(model, frames, t, (-3, -2, -1))
        assert (streamed[t] - other).abs().max() > 1e-2
    # before frame 9: the frames at the offsets that exist (none at t < 3)
    for t in (0, 4, 7):
        kept = [o for o in OFFSETS if t + o >= 0]
        clip = inputs_of(model, [frames[t + o] for o in kept] + [frames[t]])
        with torch.no_grad():
            expected = model.predict(clip)[0].seg_logits.data
        torch.testing.assert_close(streamed[t], expected, atol=1e-4, rtol=0)


@pytest.fixture(scope='module')
def exported(model, tmp_path_factory):
    """The step exported once: program and AOTInductor package."""
    out = str(tmp_path_factory.mktemp('vspw_export'))
    paths = export_step(model, (H, W), out, aoti=True)
    return out, paths


@pytest.mark.slow
def test_exported_strided_step_equals_eager_from_frame_0(
        model, frames, exported):
    out, paths = exported
    info = load_step_info(out)
    assert info['memory_offsets'] == list(OFFSETS)
    assert paths['memory_offsets'] == list(OFFSETS)
    assert (info['memory_length'], info['memory_span']) == (3, 9)
    # keys and values of 9 frames at 1/32 of 64x64, and the count
    assert info['memory_shapes'] == [[1, 9, 8, 2, 2], [1, 9, 128, 2, 2], []]
    assert info['memory_dtypes'] == ['float32', 'float32', 'int64']
    expected = eager_stream(model, frames)
    inputs = [inputs_of(model, [frame])[:, 0] for frame in frames]
    for path, aoti in ((paths['program'], False), (paths['aoti'], True)):
        streamer = ExportedStreamer(load_step(path, aoti=aoti),
                                    zero_memory(info))
        for run in range(2):  # reset() starts a new stream
            with torch.no_grad():
                got = [streamer(x) for x in inputs]
            for t in range(NUM_FRAMES):
                torch.testing.assert_close(
                    got[t], expected[t], atol=1e-4, rtol=0,
                    msg=lambda m: f'{path} frame {t} (run {run}): {m}')
            assert int(streamer.memory[2]) == 9
            streamer.reset()
