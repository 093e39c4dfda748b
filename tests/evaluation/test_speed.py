"""Timing, memory and FLOP helpers of lma_mmseg.evaluation.speed."""
import time

import numpy as np
import pytest
import torch
from mmengine.config import Config

import lma_mmseg  # noqa: F401
from lma_mmseg.apis import init_model
from lma_mmseg.evaluation.speed import (MemoryProbe, ReencodeRunner,
                                        SingleFrameRunner, StreamingRunner,
                                        count_flops, count_params,
                                        is_memory_model, measure_peak_memory,
                                        run_interleaved, summarize,
                                        synthetic_frames)


def test_summarize_by_hand():
    s = summarize([float(v) for v in range(1, 11)])
    assert s['frames'] == 10
    assert s['median_ms'] == 5.5
    assert s['p90_ms'] == pytest.approx(9.1)
    assert s['mean_ms'] == 5.5
    assert s['min_ms'] == 1.0
    assert s['fps'] == pytest.approx(round(1000 / 5.5, 2))
    with pytest.raises(ValueError, match='no timed frame'):
        summarize([])


def test_synthetic_frames_pan():
    frames = synthetic_frames(3, (32, 64), seed=1)
    assert [f.shape for f in frames] == [(32, 64, 3)] * 3
    assert frames[0].dtype == np.uint8
    # frame i is the scene shifted by 4 px per frame
    np.testing.assert_array_equal(frames[1][:, :-4], frames[0][:, 4:])
    with pytest.raises(ValueError, match='shape'):
        synthetic_frames(1, (4, 64))


class Recorder:
    """A runner that records the frames it is given and sleeps a bit."""

    def __init__(self, name, log, sleep):
        self.name, self.log, self.sleep = name, log, sleep
        self.resets = 0

    def reset(self):
        self.resets += 1

    def step(self, frame):
        self.log.append((self.name, int(frame[0, 0, 0])))
        time.sleep(self.sleep)


def test_run_interleaved_alternates_and_skips_warmup():
    log = []
    runners = dict(a=Recorder('a', log, 0.002), b=Recorder('b', log, 0.02))
    frames = [np.full((2, 2, 3), i, np.uint8) for i in range(3)]
    times = run_interleaved(
        runners, frames, num_frames=4, warmup=2, device='cpu',
        progress=False)
    # every frame goes to both runners, the order alternates
    assert log[:4] == [('a', 0), ('b', 0), ('b', 1), ('a', 1)]
    assert [f for _, f in log[::2]] == [0, 1, 2, 0, 1, 2]
    assert runners['a'].resets == runners['b'].resets == 1
    assert len(times['a']) == len(times['b']) == 4
    assert min(times['b']) >= 20
    assert np.median(times['b']) > np.median(times['a'])
    with pytest.raises(ValueError, match='--frames'):
        run_interleaved(runners, frames, 0, 0, 'cpu', progress=False)


class Allocator:
    """A runner that touches ``mib`` MiB during each step."""

    def __init__(self, mib):
        self.mib = mib

    def reset(self):
        pass

    def step(self, frame):
        buf = np.ones(2**20 * self.mib, np.uint8)
        return int(buf.sum())


def test_measure_peak_memory_sees_per_frame_allocations():
    frames = [np.zeros((2, 2, 3), np.uint8)]
    mem = measure_peak_memory(
        dict(small=Allocator(8), large=Allocator(64)), frames, steps=3,
        device='cpu')
    assert 'CPU' in mem.pop('_description')
    assert mem['large']['peak_bytes'] > 64 * 2**20
    if MemoryProbe('cpu').clear_refs:
        # the same buffer size every frame: without malloc_trim the freed
        # memory would be reused and no increase seen after the first frame
        assert mem['small']['increase_bytes'] >= 7 * 2**20
        assert mem['large']['increase_bytes'] >= 60 * 2**20
        assert mem['large']['increase_bytes'] < 80 * 2**20


def test_count_flops_and_params_of_lma_erfnet():
    torch.set_num_threads(1)
    lma = init_model(Config.fromfile('configs/_base_/models/lma-erfnet.py'))
    base = init_model(
        Config.fromfile('configs/_base_/models/erfnet-split.py'))
    assert is_memory_model(lma) and not is_memory_model(base)
    shape = (64, 128)
    single = count_flops(base, 'single', shape, 'cpu')
    stream = count_flops(lma, 'streaming', shape, 'cpu')
    reenc = count_flops(lma, 'reencode', shape, 'cpu')
    for res in (single, stream, reenc):
        assert res['error'] is None and res['flops'] > 0
    # T=3 frames x 21x21 window x (8x16 positions at 1/8) x (16 + 64) ch
    assert stream['attention_flops'] == 3 * 21 * 21 * 8 * 16 * (16 + 64)
    assert reenc['attention_flops'] == stream['attention_flops']
    assert single['attention_flops'] == 0
    # streaming adds the neck to the single-frame cost; re-encoding runs
    # the backbone on 4 frames
    assert single['flops'] < stream['flops'] < 1.2 * single['flops']
    assert reenc['flops'] > 2.5 * single['flops']
    assert count_params(lma) > count_params(base) == sum(
        p.numel() for p in base.parameters())
    assert count_flops(base, 'bogus', shape, 'cpu')['error']


def test_streaming_and_reencode_runners_agree():
    """Both LMA modes time the same computation: equal results once the
    memory is full (frame T+1 onwards)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    lma = init_model(Config.fromfile('configs/_base_/models/lma-erfnet.py'))
    frames = synthetic_frames(6, (32, 64), seed=2)
    stream = StreamingRunner(lma)
    reenc = ReencodeRunner(lma, lma.neck.memory_length)
    single = SingleFrameRunner(
        init_model(Config.fromfile('configs/_base_/models/erfnet-split.py')))
    for runner in (stream, reenc):
        runner.reset()
    for i, frame in enumerate(frames):
        a = stream.step(frame)[0]
        b = reenc.step(frame)[0]
        assert a.pred_sem_seg.shape == (32, 64)
        if i >= lma.neck.memory_length:
            torch.testing.assert_close(
                a.seg_logits.data, b.seg_logits.data, rtol=1e-4, atol=1e-4)
    assert single.step(frames[0])[0].pred_sem_seg.shape == (32, 64)
