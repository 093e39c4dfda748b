"""tools/gpu_check.sh: the dry run passes on a machine without a GPU.

The GPU check runs in one call on a GPU machine; its dry run exercises every
step that needs no GPU (the carried wheels, the CUDA sources compiled for
sm_90, the CUDA tests collected, the training, benchmark and op benchmark
command lines at tiny sizes), so the script cannot rot between GPU runs.
"""
import json
import os
import os.path as osp
import shutil
import stat
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(ROOT, 'tools', 'gpu_check.sh')
DRY_RUN_STEPS = {
    'wheels', 'build_mmcv', 'build_ext', 'make_data', 'import_check',
    'pytest_cuda', 'sanitizer', 'train_amp', 'benchmark_op_fp32',
    'benchmark_op_fp16', 'benchmark_op_bf16', 'bench_512x1024_fp32_eager',
    'bench_512x1024_fp16_eager', 'bench_512x1024_fp32_compile',
    'bench_512x1024_fp16_compile'
}
OUT_FILES = ['benchmark.json', 'benchmark_op.json', 'gpu_check.log',
             'summary.json']


def run_check(out, *args, python=sys.executable, **env):
    full_env = dict(os.environ, PYTHON=python, OMP_NUM_THREADS='1', **env)
    for key in ('OUT', 'GPU_CHECK_ONLY', 'GPU_CHECK_BUDGET'):
        if key not in env:
            full_env.pop(key, None)
    return subprocess.run(['bash', SCRIPT, *args, str(out)], cwd=ROOT,
                          env=full_env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=900)


def load_summary(out):
    with open(osp.join(out, 'summary.json')) as f:
        return json.load(f)


def tool_help(tool):
    return subprocess.run([sys.executable, tool, '--help'], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=True).stdout


def has_wheels():
    whl = osp.join(ROOT, '.whl')
    return osp.isdir(whl) and any(f.endswith('.whl') for f in os.listdir(whl))


def check_skip(step, helps):
    """A skipped step of the dry run must have a reason that holds."""
    name, note = step['name'], step['note']
    if name in ('wheels', 'build_mmcv'):
        assert not has_wheels() and 'make gpu-wheels' in note, step
    elif name == 'build_ext':
        assert shutil.which('nvcc') is None, step
    elif name.startswith('benchmark_op_'):
        assert note.endswith(f'no --dtype option for {name[-4:]}'), step
        assert '--dtype' not in helps['tools/analysis/benchmark_op.py']
    elif name.startswith('bench_'):
        text = helps['tools/benchmark.py']
        if 'no --compile option' in note:
            assert name.endswith('_compile') and '--compile' not in text
        else:
            assert name.split('_')[2] == 'fp16' and 'for fp16' in note, step
            assert not any(opt in text for opt in ('--dtype', '--amp',
                                                   '--fp16'))
    else:
        raise AssertionError(f'{name} was skipped: {note}')


@pytest.mark.slow
def test_dry_run_passes(tmp_path):
    out = tmp_path / 'gpu_check'
    res = run_check(out, '--dry-run')
    assert res.returncode == 0, res.stdout[-4000:]
    assert sorted(os.listdir(out)) == OUT_FILES
    summary = load_summary(out)
    assert summary['kind'] == 'lma_mmseg.gpu_check'
    assert summary['mode'] == 'dry-run'
    assert summary['finished'] is True and summary['ok'] is True
    assert summary['failed'] == []
    steps = {s['name']: s for s in summary['steps']}
    assert set(steps) == DRY_RUN_STEPS
    helps = {t: tool_help(t) for t in ('tools/benchmark.py',
                                       'tools/analysis/benchmark_op.py')}
    for step in steps.values():
        assert step['command'] and step['seconds'] >= 0
        if step['status'] != 'ok':
            assert step['status'] == 'skipped', step
            check_skip(step, helps)
    assert summary['skipped'] == [
        s['name'] for s in summary['steps'] if s['status'] == 'skipped']
    log = (out / 'gpu_check.log').read_text()
    for name in DRY_RUN_STEPS:
        assert f'===== {name}: {steps[name]["status"]}' in log
    # what each step checked
    if steps['build_ext']['status'] == 'ok':
        assert 'sm_90 kernels' in steps['build_ext']['note']
        assert "for 'sm_90'" in log
    assert 'tests collected' in steps['pytest_cuda']['note']
    assert 'Iter(train) [1/1]' in steps['train_amp']['note']
    fig = summary['figures']['benchmark/512x1024_fp32_eager']
    assert fig['lma_streaming_median_ms'] > 0 and fig['erfnet_median_ms'] > 0
    assert fig['overhead_ratio'] > 0
    bench = json.loads((out / 'benchmark.json').read_text())
    run = bench['runs']['512x1024_fp32_eager']
    assert run['kind'] == 'lma_mmseg.benchmark' and run['shape'] == [64, 128]
    assert {r['role'] for r in run['results']} == {'model', 'baseline'}
    ops = json.loads((out / 'benchmark_op.json').read_text())
    assert ops['runs']['fp32']['results']


def test_failed_step_is_recorded_and_the_next_one_runs(tmp_path):
    """A step that fails is logged, the following steps still run, and the
    exit status is non-zero."""
    python = tmp_path / 'python'
    # the real interpreter, except that the data generator fails
    python.write_text('#!/bin/sh\n'
                      'case "$*" in *make_demo_data*) '
                      'echo "no data today" >&2; exit 3;; esac\n'
                      f'exec {sys.executable} "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    out = tmp_path / 'out'
    res = run_check(out, '--dry-run', python=str(python),
                    GPU_CHECK_ONLY='^(make_data|import_check)$')
    assert res.returncode == 1, res.stdout[-4000:]
    summary = load_summary(out)
    steps = {s['name']: s for s in summary['steps']}
    assert summary['ok'] is False and summary['failed'] == ['make_data']
    assert steps['make_data']['status'] == 'failed'
    assert steps['make_data']['note'] == 'exit 3: no data today'
    assert steps['import_check']['status'] == 'ok'
    assert 'mmseg' in steps['import_check']['note']
    order = [s['name'] for s in summary['steps']]
    assert order.index('make_data') < order.index('import_check')
    for name, step in steps.items():
        if name not in ('make_data', 'import_check'):
            assert step['status'] == 'skipped'
            assert step['note'].startswith('not selected'), step
    log = (out / 'gpu_check.log').read_text()
    assert 'no data today' in log and '----- end of the make_data log' in (
        res.stdout)


def test_budget_skips_what_does_not_fit(tmp_path):
    """Steps that would start with less than 20 s of the budget left are
    skipped, not started."""
    res = run_check(tmp_path, '--dry-run', GPU_CHECK_BUDGET='25',
                    GPU_CHECK_ONLY='^(make_data|import_check|pytest_cuda)$')
    assert res.returncode == 0, res.stdout[-4000:]
    summary = load_summary(tmp_path)
    assert summary['budget_s'] == 25 and summary['ok'] is True
    for step in summary['steps']:
        assert step['status'] == 'skipped', step
        assert step['note'].startswith(
            ('no time left', 'not selected', 'no .whl/'))
    assert {s['name'] for s in summary['steps']
            if s['note'].startswith('no time left')} == {
                'make_data', 'import_check', 'pytest_cuda'}


@pytest.mark.parametrize('args,message', [(['--bogus'], 'unknown option'),
                                          (['a', 'b'], 'one OUTDIR')])
def test_bad_arguments(args, message):
    res = subprocess.run(['bash', SCRIPT, *args], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=60)
    assert res.returncode == 2 and message in res.stdout


def test_help_lists_the_steps():
    res = subprocess.run(['bash', SCRIPT, '--help'], cwd=ROOT,
                         stdout=subprocess.PIPE, text=True, timeout=60)
    assert res.returncode == 0
    for word in ('--dry-run', 'pytest_cuda', 'sanitizer', 'train_amp',
                 'summary.json', 'GPU_CHECK_BUDGET'):
        assert word in res.stdout
