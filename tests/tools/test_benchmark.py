"""tools/benchmark.py, the command line of the model benchmark
(lma_mmseg.benchmarks.model_benchmark): JSON files, printed table, argument
errors."""
import importlib.util
import json
import os.path as osp

import pytest

from helpers import ROOT
from helpers.tools import run_tool_in_process

LMA = osp.join(ROOT, 'configs', '_base_', 'models', 'lma-erfnet.py')
ERFNET = osp.join(ROOT, 'configs', '_base_', 'models', 'erfnet-split.py')


def _tool():
    """The command line, loaded in this process."""
    spec = importlib.util.spec_from_file_location(
        'benchmark_tool', osp.join(ROOT, 'tools', 'benchmark.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_lma_against_baseline_json(tmp_path):
    """The command line as ``python`` runs it, in this process (the GPU
    check's dry run, tests/tools/test_gpu_check.py, runs the tool in a
    fresh one)."""
    out = tmp_path / 'bench' / 'benchmark.json'
    proc = run_tool_in_process(
        'benchmark.py', LMA, '--baseline', ERFNET, '--device', 'cpu',
        '--shape', '32', '64', '--frames', '3', '--warmup', '1',
        '--threads', '1', '--no-progress', '--out', out,
        '--baseline-out', tmp_path / 'bench' / 'baseline.json')
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
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


@pytest.mark.parametrize('args,message', [
    (['--baseline-out', 'b.json'], '--baseline-out needs --baseline'),
    (['--frames', '0'], '--frames must be >= 1'),
    (['--threads', '0'], '--threads must be >= 1'),
    (['--shape', '4', '64'], '--shape must be at least 8 8'),
    (['--dtype', 'int8'], "invalid choice: 'int8'"),
])
def test_argument_errors_name_the_flag(tmp_path, capsys, args, message):
    tool = _tool()
    with pytest.raises(SystemExit) as exc:
        tool.main([LMA, *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / 'b.json').exists()
