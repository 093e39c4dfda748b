"""tools/analysis/benchmark_op.py, the command line of the op benchmark
(lma_mmseg.benchmarks.op_benchmark), on tiny shapes."""
import importlib.util
import json
import os.path as osp

import pytest

from helpers import ROOT
from helpers.tools import run_tool_in_process


def _tool():
    """The command line, loaded in this process."""
    spec = importlib.util.spec_from_file_location(
        'benchmark_op_tool',
        osp.join(ROOT, 'tools', 'analysis', 'benchmark_op.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_command_line_writes_tables_and_json(tmp_path):
    """The command line as ``python`` runs it, in this process (the GPU
    check's dry run, tests/tools/test_gpu_check.py, runs the tool in a
    fresh one)."""
    out = tmp_path / 'sub' / 'bench.json'
    result = run_tool_in_process(
        'analysis/benchmark_op.py', '--quick', '--device', 'cpu', '--shapes',
        'erfnet', '--repeats', '1', '--ref-repeats', '1', '--threads', '1',
        '--model-size', '32', '64', '--out', out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'fwd+bwd ms' in result.stdout
    assert 'time / time of the fused op' in result.stdout
    assert 'fwd / fused' in result.stdout
    assert 'cpu/erfnet/float32: fused forward' in result.stdout
    assert f'results written to {out}' in result.stdout
    data = json.loads(out.read_text())
    assert data['environment']['threads'] == 1
    assert {r['method'] for r in data['results']} == {
        'fused', 'unfused', 'reference', 'sdpa'
    }
    assert data['settings']['quick'] is True
    # written atomically: no temporary file is left next to the output
    assert [p.name for p in out.parent.iterdir()] == ['bench.json']


@pytest.mark.parametrize('args,message', [
    (['--repeats', '0'], '--repeats and --ref-repeats must be >= 1'),
    (['--threads', '0'], '--threads must be >= 1'),
    (['--methods', 'fast'], "invalid choice: 'fast'"),
])
def test_argument_errors_name_the_flag(capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        _tool().main(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_json_output_in_process(capsys):
    result = _tool().main([
        '--quick', '--device', 'cpu', '--shapes', 'pspnet', '--methods',
        'fused', 'plain', '--repeats', '1', '--no-model', '--json'
    ])
    printed = json.loads(capsys.readouterr().out)
    assert printed['ratios'] == result['ratios']
    assert printed['erfnet_model'] == {}
    assert 'cpu/pspnet/float32/plain_over_fused_forward_time' in \
        printed['ratios']
