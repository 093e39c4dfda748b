"""The one timer of the benchmarks (lma_mmseg.benchmarks.timer):
interleaving, warm-up, schedules, paired ratios, peak memory, summaries."""
import time

import numpy as np
import pytest

from lma_mmseg.benchmarks.problem import TimerSettings
from lma_mmseg.benchmarks.timer import (MemoryProbe, Timer, Timing,
                                        paired_ratio, summarize)


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


def recorder(name, log, sleep):
    """A function that records its call and sleeps a bit."""

    def run(i):
        log.append((name, i))
        time.sleep(sleep)

    return run


def test_run_alternates_and_skips_warmup():
    log = []
    fns = dict(a=recorder('a', log, 0.002), b=recorder('b', log, 0.02))
    timings = Timer('cpu', TimerSettings(repeats=4, warmup=2)).run(fns)
    # every round calls both, the order alternates; the round index is
    # passed (a frame runner takes the frame of that index)
    assert log[:4] == [('a', 0), ('b', 0), ('b', 1), ('a', 1)]
    assert [i for _, i in log[::2]] == [0, 1, 2, 3, 4, 5]
    for name in 'ab':
        t = timings[name]
        assert len(t.times_s) == len(t.cpu_times_s) == 4
        assert t.rounds == [2, 3, 4, 5]
    assert min(timings['b'].times_s) >= 0.02
    assert timings['b'].median_s > timings['a'].median_s
    # sleeping costs no CPU time
    assert timings['b'].cpu_median_s < timings['b'].median_s
    assert set(timings['a'].as_dict()) == {'median_s', 'cpu_median_s',
                                           'times_s'}


def test_schedule_aligns_the_timed_rounds():
    """A function with fewer runs joins after the others' warm-up and is
    timed in the same rounds, so that its runs pair with theirs."""
    log = []
    fns = dict(fast=recorder('fast', log, 0.001),
               slow=recorder('slow', log, 0.01))
    timings = Timer('cpu', TimerSettings(repeats=3, warmup=2)).run(
        fns, schedule=dict(slow=(0, 2)))
    assert [i for n, i in log if n == 'slow'] == [2, 3]
    assert timings['slow'].rounds == [2, 3]
    assert timings['fast'].rounds == [2, 3, 4]
    ratio = paired_ratio(timings['slow'], timings['fast'])
    assert ratio > 3
    with pytest.raises(ValueError, match='schedule'):
        Timer('cpu').run(fns, schedule=dict(slow=(0, 0)))
    with pytest.raises(ValueError, match='fns'):
        Timer('cpu').run({})
    with pytest.raises(TypeError, match='TimerSettings'):
        Timer('cpu', dict(repeats=1))


def test_paired_ratio_by_hand():
    a = Timing(times_s=[2.0, 4.0, 9.0], cpu_times_s=[0] * 3, rounds=[1, 2, 3])
    b = Timing(times_s=[1.0, 1.0, 2.0], cpu_times_s=[0] * 3, rounds=[0, 1, 2])
    # rounds 1 and 2 pair: 2/1 and 4/2
    assert paired_ratio(a, b) == 2.0
    assert paired_ratio(a, Timing([1.0], [0], [7])) is None


def allocator(mib):
    """A function that touches ``mib`` MiB during each call."""

    def run(i):
        buf = np.ones(2**20 * mib, np.uint8)
        return int(buf.sum())

    return run


def test_peak_memory_sees_per_call_allocations():
    timer = Timer('cpu')
    mem = timer.peak_memory(
        dict(small=allocator(8), large=allocator(64)), calls=3)
    assert 'CPU' in timer.memory_description
    assert mem['large']['peak_bytes'] > 64 * 2**20
    if MemoryProbe('cpu').clear_refs:
        # the same buffer size every call: without malloc_trim the freed
        # memory would be reused and no increase seen after the first call
        assert mem['small']['increase_bytes'] >= 7 * 2**20
        assert mem['large']['increase_bytes'] >= 60 * 2**20
        assert mem['large']['increase_bytes'] < 80 * 2**20
        assert 'VmHWM' in timer.memory_description
