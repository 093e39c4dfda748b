"""Timing, memory and FLOP helpers of lma_mmseg.evaluation.speed."""
import time

import numpy as np
import pytest
import torch
from mmengine.config import Config

import lma_mmseg  # noqa: F401
from lma_mmseg.apis import init_model
from lma_mmseg.evaluation.speed import (MemoryProbe, count_flops,
                                        count_params, is_memory_model,
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
        # touch 8 MiB more than in the previous call: new resident pages
        # whatever the allocator kept from before
        buf = np.ones(2**20 * 8 * len(self.log), np.uint8)
        time.sleep(self.sleep)
        return buf.sum()


def test_run_interleaved_alternates_and_skips_warmup():
    log = []
    runners = dict(a=Recorder('a', log, 0.002), b=Recorder('b', log, 0.02))
    frames = [np.full((2, 2, 3), i, np.uint8) for i in range(3)]
    stats = run_interleaved(
        runners, frames, num_frames=4, warmup=2, device='cpu',
        progress=False)
    # every frame goes to both runners, the order alternates
    assert log[:4] == [('a', 0), ('b', 0), ('b', 1), ('a', 1)]
    assert [f for _, f in log[::2]] == [0, 1, 2, 0, 1, 2]
    assert runners['a'].resets == runners['b'].resets == 1
    assert len(stats['a']['times_ms']) == len(stats['b']['times_ms']) == 4
    assert min(stats['b']['times_ms']) >= 20
    assert np.median(stats['b']['times_ms']) > np.median(
        stats['a']['times_ms'])
    assert stats['a']['peak_memory_bytes'] > 8 * 2**20
    if MemoryProbe('cpu').clear_refs:
        assert stats['a']['peak_memory_increase_bytes'] > 0
    assert 'CPU' in stats['_memory_measure']
    with pytest.raises(ValueError, match='--frames'):
        run_interleaved(runners, frames, 0, 0, 'cpu', progress=False)


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
