"""Smoke test of tools/analysis/benchmark_op.py (tiny shapes)."""
import importlib.util
import json
import os.path as osp

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'analysis', 'benchmark_op.py')


def load_tool():
    spec = importlib.util.spec_from_file_location('benchmark_op', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_benchmark_writes_table_and_json(tmp_path, capsys):
    tool = load_tool()
    out = tmp_path / 'sub' / 'bench.json'
    result = tool.main([
        '--quick', '--device', 'cpu', '--repeats', '1', '--ref-repeats',
        '1', '--threads', '1', '--model-size', '32', '64', '--out',
        str(out)
    ])
    printed = capsys.readouterr().out
    assert 'fwd+bwd ms' in printed and 'ERFNet forward 32x64' in printed
    data = json.loads(out.read_text())
    assert data['results'] == json.loads(json.dumps(result['results']))
    methods = {(r['shape'], r['method']) for r in data['results']}
    assert methods == {(s, m) for s in ('erfnet', 'pspnet')
                       for m in ('fused', 'unfused', 'reference')}
    for r in data['results']:
        for phase in ('forward', 'forward_backward'):
            assert r[phase]['median_s'] > 0
            assert len(r[phase]['times_s']) == 1
    assert data['erfnet_model']['cpu']['size'] == [32, 64]
    assert 'cpu/erfnet/fused_forward_over_erfnet_forward' in data['ratios']
    assert ('cpu/erfnet/reference_over_fused_forward_backward_time'
            in data['ratios'])
    # no temporary file is left next to the output
    assert [p.name for p in out.parent.iterdir()] == ['bench.json']


def test_reference_is_skipped_above_the_memory_limit(tmp_path, capsys):
    tool = load_tool()
    result = tool.main([
        '--quick', '--device', 'cpu', '--shapes', 'pspnet', '--methods',
        'reference', '--no-model', '--repeats', '1', '--max-ref-gb', '1e-6'
    ])
    (rec, ) = result['results']
    assert rec['note'].startswith('skipped: needs ~')
    assert 'forward' not in rec and rec['estimated_bytes'] > 0
    assert 'skipped: needs' in capsys.readouterr().out


def test_reference_memory_estimate_at_the_paper_shapes():
    tool = load_tool()
    erf = tool.reference_bytes(tool.SHAPES['erfnet'], backward=False)
    psp = tool.reference_bytes(tool.SHAPES['pspnet'], backward=False)
    assert 5 * 2**30 < erf < 20 * 2**30  # measured: about 9 GB
    assert psp > 100 * 2**30  # far beyond any CPU machine here


def test_bad_arguments():
    tool = load_tool()
    with pytest.raises(SystemExit):
        tool.parse_args(['--repeats', '0'])
    with pytest.raises(SystemExit):
        tool.parse_args(['--shapes', 'resnet'])
