"""The op profiler (lma_mmseg.ops.profiler) and its command line
tools/analysis/benchmark_op.py, on tiny shapes."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from lma_mmseg.ops import local_attention_reference
from lma_mmseg.ops.profiler import (SHAPES, format_table, plain_attention,
                                    reference_bytes, run_benchmark)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'analysis', 'benchmark_op.py')


def test_quick_benchmark_results_and_ratios():
    lines = []
    result = run_benchmark(
        devices=['cpu'],
        methods=['fused', 'unfused', 'reference', 'plain', 'fused_bias'],
        repeats=1,
        ref_repeats=1,
        model_size=(32, 64),
        quick=True,
        log=lines.append)
    methods = {(r['shape'], r['method']) for r in result['results']}
    assert methods == {(s, m)
                       for s in ('erfnet', 'pspnet')
                       for m in ('fused', 'unfused', 'reference', 'plain',
                                 'fused_bias')}
    for r in result['results']:
        assert r['dtype'] == 'float32' and r['device'] == 'cpu'
        for phase in ('forward', 'forward_backward'):
            assert r[phase]['median_s'] > 0
            assert len(r[phase]['times_s']) == 1
            assert r[phase]['peak_bytes'] >= 0
    assert result['erfnet_model']['cpu']['size'] == [32, 64]
    ratios = result['ratios']
    for name in ('fused_forward_over_erfnet_forward',
                 'unfused_over_fused_forward_time',
                 'reference_over_fused_forward_backward_time',
                 'plain_over_fused_forward_backward_time',
                 'fused_bias_over_fused_forward_time'):
        assert f'cpu/erfnet/float32/{name}' in ratios, name
    assert result['environment']['cpu_isa'] in ('avx2', 'baseline')
    assert 'VmHWM' in result['memory_method']['cpu'] or \
        'ru_maxrss' in result['memory_method']['cpu']
    # progress: one line per measured item plus the header
    assert len(lines) == 1 + 1 + 10
    table = format_table(result['results'])
    assert 'fwd+bwd ms' in table and 'plain' in table


def test_half_dtypes_are_skipped_on_cpu_with_a_note():
    result = run_benchmark(
        devices=['cpu'],
        shapes=['erfnet'],
        methods=['fused', 'unfused', 'plain'],
        dtypes=['bfloat16'],
        repeats=1,
        model=False,
        quick=True,
        log=lambda line: None)
    notes = {r['method']: r.get('note', '') for r in result['results']}
    assert notes['fused'] == notes['unfused'] == \
        'skipped: the CPU kernels have no bfloat16'
    assert notes['plain'] == ''  # plain PyTorch runs in bfloat16
    plain = [r for r in result['results'] if r['method'] == 'plain'][0]
    assert plain['forward']['median_s'] > 0


def test_reference_is_skipped_above_the_memory_limit():
    lines = []
    result = run_benchmark(
        devices=['cpu'],
        shapes=['pspnet'],
        methods=['reference'],
        model=False,
        repeats=1,
        max_ref_gb=1e-6,
        quick=True,
        log=lines.append)
    (rec, ) = result['results']
    assert rec['note'].startswith('skipped: needs ~')
    assert 'forward' not in rec and rec['estimated_bytes'] > 0
    assert any('skipped: needs' in line for line in lines)


def test_reference_memory_estimate_at_the_paper_shapes():
    erf = reference_bytes(SHAPES['erfnet'], backward=False)
    psp = reference_bytes(SHAPES['pspnet'], backward=False)
    assert 5 * 2**30 < erf < 20 * 2**30  # measured: about 9 GB
    assert psp > 100 * 2**30  # far beyond any CPU machine here


@pytest.mark.parametrize('window,dilation', [(3, 1), (5, 2), (7, 1)])
def test_plain_attention_matches_reference(window, dilation):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 5, 9, generator=g, dtype=torch.float64)
    k = torch.randn(2, 2, 3, 5, 9, generator=g, dtype=torch.float64)
    v = torch.randn(2, 2, 4, 5, 9, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        plain_attention(q, k, v, window, dilation, 0.6),
        local_attention_reference(q, k, v, window, dilation, 0.6),
        rtol=0, atol=1e-12)


def test_bad_arguments():
    with pytest.raises(ValueError, match='repeats'):
        run_benchmark(devices=['cpu'], repeats=0)
    with pytest.raises(ValueError, match='shapes'):
        run_benchmark(devices=['cpu'], shapes=['resnet'])
    with pytest.raises(ValueError, match='methods'):
        run_benchmark(devices=['cpu'], methods=['fast'])
    with pytest.raises(ValueError, match='dtypes'):
        run_benchmark(devices=['cpu'], dtypes=['int8'])
    with pytest.raises(ValueError, match='devices'):
        run_benchmark(devices=['tpu'])


def _run_tool(*args):
    return subprocess.run([sys.executable, TOOL, *args],
                          capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ), timeout=600)


def test_command_line_writes_table_and_json(tmp_path):
    out = tmp_path / 'sub' / 'bench.json'
    result = _run_tool('--quick', '--device', 'cpu', '--shapes', 'erfnet',
                       '--repeats', '1', '--ref-repeats', '1', '--threads',
                       '1', '--model-size', '32', '64', '--out', str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'fwd+bwd ms' in result.stdout
    assert 'cpu/erfnet/float32: fused forward' in result.stdout
    data = json.loads(out.read_text())
    assert data['environment']['threads'] == 1
    assert {r['method'] for r in data['results']} == {
        'fused', 'unfused', 'reference'
    }
    # written atomically: no temporary file is left next to the output
    assert [p.name for p in out.parent.iterdir()] == ['bench.json']
    bad = _run_tool('--repeats', '0')
    assert bad.returncode != 0 and '--repeats' in bad.stderr
