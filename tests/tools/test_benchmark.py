"""The benchmark runner (lma_mmseg.evaluation.benchmark) and its command
line tools/benchmark.py: JSON fields, interleaved baseline, overhead."""
import json
import os.path as osp

import pytest

import lma_mmseg  # noqa: F401
from helpers import ROOT
from helpers.tools import run_tool
from lma_mmseg.evaluation.benchmark import run_benchmark

LMA = osp.join(ROOT, 'configs', '_base_', 'models', 'lma-erfnet.py')
ERFNET = osp.join(ROOT, 'configs', '_base_', 'models', 'erfnet-split.py')


def test_benchmark_lma_against_baseline_json(tmp_path):
    out = tmp_path / 'bench' / 'benchmark.json'
    proc = run_tool(
        'benchmark.py', LMA, '--baseline', ERFNET, '--device', 'cpu',
        '--shape', '32', '64', '--frames', '3', '--warmup', '1',
        '--threads', '1', '--no-progress', '--out', out,
        '--baseline-out', tmp_path / 'bench' / 'baseline.json', check=True)
    data = json.loads(out.read_text())
    # the printed table holds the JSON's medians
    for r in data['results']:
        assert f' {r["median_ms"]} ' in proc.stdout
    assert f'results written to {out}' in proc.stdout
    assert data['kind'] == 'lma_mmseg.benchmark'
    assert data['device'] == 'cpu' and data['cpu_threads'] == 1
    assert data['shape'] == [32, 64]
    assert data['frames'] == 3 and data['warmup'] == 1
    assert data['input'].startswith('synthetic 32x64')
    assert data['interleaved'] is True
    assert 'VmHWM' in data['memory_measure'] or 'ru_maxrss' in data[
        'memory_measure']
    assert data['model']['method'] == 'LMA'
    assert data['model']['memory_length'] == 3
    assert data['model']['backbone'] == 'ERFNetEncoder'
    assert data['baseline']['method'] == 'single-frame'

    by_mode = {(r['role'], r['mode']): r for r in data['results']}
    assert set(by_mode) == {('model', 'streaming'), ('model', 'reencode'),
                            ('baseline', 'single')}
    for r in data['results']:
        assert len(r['times_ms']) == 3
        assert r['median_ms'] > 0 and r['p90_ms'] >= r['median_ms'] * 0.5
        assert r['fps'] == pytest.approx(1000 / r['mean_ms'], rel=1e-2)
        assert r['peak_memory_mb'] > 0
        assert 0 <= r['peak_memory_increase_mb'] <= r['peak_memory_mb']
        assert r['params'] > 10**6
        assert r['gflops'] > 0
    stream = by_mode['model', 'streaming']
    lma, base = by_mode['model', 'reencode'], by_mode['baseline', 'single']
    assert lma['params'] == stream['params'] > base['params']
    assert lma['attention_flops'] == 3 * 21 * 21 * 4 * 8 * (16 + 64)
    assert stream['attention_flops'] == lma['attention_flops']
    assert lma['gflops'] > 2.5 * base['gflops']
    assert base['gflops'] < stream['gflops'] < 1.2 * base['gflops']

    assert [o['mode'] for o in data['overhead']] == ['streaming', 'reencode']
    for over in data['overhead']:
        r = by_mode['model', over['mode']]
        assert over['ratio'] == pytest.approx(
            r['median_ms'] / base['median_ms'], rel=1e-3)
        assert over['ms'] == pytest.approx(
            r['median_ms'] - base['median_ms'], abs=1e-2)
    assert data['primary']['mode'] == 'streaming'
    assert data['primary']['median_ms'] == stream['median_ms']

    # the baseline's own JSON holds its timings from this same run
    alone = json.loads((tmp_path / 'bench' / 'baseline.json').read_text())
    assert alone['kind'] == 'lma_mmseg.benchmark'
    assert alone['model'] == data['baseline'] and alone['baseline'] is None
    assert alone['interleaved_with'] == data['model']['config']
    assert [r['mode'] for r in alone['results']] == ['single']
    assert alone['results'][0]['times_ms'] == base['times_ms']
    assert alone['primary']['mode'] == 'single'
    assert alone['primary']['median_ms'] == base['median_ms']
    assert alone['primary']['params'] == base['params']


def test_baseline_out_needs_a_baseline(tmp_path):
    proc = run_tool('benchmark.py', LMA, '--baseline-out', tmp_path / 'b.json')
    assert proc.returncode == 2
    assert '--baseline-out needs --baseline' in proc.stderr
    assert not (tmp_path / 'b.json').exists()


def test_benchmark_mmseg_config_single_frame(tmp_path):
    res = run_benchmark(
        'mmseg::erfnet/erfnet_fcn_4xb4-160k_cityscapes-512x1024.py',
        shape=(32, 64), frames=2, warmup=0, threads=1, progress=False,
        flops=False)
    (r, ) = res['results']
    assert (r['role'], r['mode']) == ('model', 'single')
    assert r['gflops'] is None and res['baseline'] is None
    assert res['overhead'] == []
    assert res['model']['method'] == 'single-frame'
    assert res['model']['backbone'] == 'ERFNet'


def test_benchmark_argument_errors(tmp_path):
    small = dict(shape=(32, 64), frames=1, progress=False)
    with pytest.raises(FileNotFoundError, match='nope.py'):
        run_benchmark('nope.py', progress=False)
    with pytest.raises(ValueError, match='needs a memory model'):
        run_benchmark(ERFNET, modes=['reencode'], **small)
    with pytest.raises(ValueError, match='expected a single-frame model'):
        run_benchmark(ERFNET, baseline=LMA, **small)
    with pytest.raises(FileNotFoundError, match='no image'):
        run_benchmark(ERFNET, frames_dir=str(tmp_path), **small)


@pytest.mark.cuda
@pytest.mark.skipif(
    not __import__('torch').cuda.is_available(), reason='needs CUDA')
def test_benchmark_on_cuda(tmp_path):
    res = run_benchmark(
        LMA, baseline=ERFNET, device='cuda', shape=(64, 128), frames=5,
        warmup=2, progress=False)
    assert res['device'].startswith('cuda')
    assert 'max_memory_allocated' in res['memory_measure']
    for r in res['results']:
        assert r['peak_memory_mb'] > 0 and r['gflops'] > 0
    assert [o['mode'] for o in res['overhead']] == ['streaming', 'reencode']


@pytest.mark.slow
def test_benchmark_compiled_and_bfloat16():
    """--compile times compiled twins interleaved with eager; --dtype runs
    the networks under autocast."""
    res = run_benchmark(
        LMA, baseline=ERFNET, shape=(32, 64), frames=2, warmup=5,
        modes=['streaming'], progress=False, flops=False, compile=True,
        dtype='bfloat16')
    assert res['dtype'] == 'bfloat16'
    runs = [(r['role'], r['mode'], r['compiled']) for r in res['results']]
    assert runs == [('model', 'streaming', False),
                    ('model', 'streaming', True),
                    ('baseline', 'single', False),
                    ('baseline', 'single', True)]
    assert [(o['mode'], o['compiled']) for o in res['overhead']] == [
        ('streaming', False), ('streaming', True)]
    speedups = {(c['role'], c['mode']): c for c in res['compile_speedup']}
    assert set(speedups) == {('model', 'streaming'), ('baseline', 'single')}
    for c in speedups.values():
        assert c['speedup'] == round(c['eager_ms'] / c['compiled_ms'], 4)
    assert res['primary']['mode'] == 'streaming'
    with pytest.raises(ValueError, match='--dtype'):
        run_benchmark(ERFNET, shape=(32, 64), frames=1, dtype='int8')
