"""The GPU check (tools/gpu_check.py, lma_mmseg.benchmarks.gpu_check): the
dry run passes on a machine without a GPU.

The GPU check runs in one call on a GPU machine; its dry run exercises every
step that needs no GPU (the carried wheels, the CUDA sources compiled for
sm_90, the CUDA tests collected, the training, benchmark and op benchmark
command lines at tiny sizes), so the check cannot rot between GPU runs.
"""
import json
import os
import os.path as osp
import re
import shutil
import stat
import subprocess
import sys
import time

import pytest

from lma_mmseg.benchmarks import gpu_check

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CLI = osp.join(ROOT, 'tools', 'gpu_check.py')
BENCH = 'tools/benchmark.py'
BENCH_OP = 'tools/analysis/benchmark_op.py'
DRY_RUN_STEPS = {
    'wheels', 'build_mmcv', 'build_ext', 'make_data', 'import_check',
    'pytest_cuda', 'sanitizer', 'train_amp', 'benchmark_op_fp32',
    'benchmark_op_fp16', 'benchmark_op_bf16', 'benchmark_op_peers',
    'bench_512x1024_fp32_eager', 'bench_512x1024_fp16_eager',
    'bench_512x1024_fp32_compile', 'bench_512x1024_fp16_compile'
}
GPU_STEPS = (DRY_RUN_STEPS - {'sanitizer'}) | {
    'sanitizer_memcheck', 'sanitizer_racecheck', 'sanitizer_synccheck',
    'bench_1024x2048_fp32_eager', 'bench_1024x2048_fp16_eager',
    'bench_1024x2048_fp32_compile', 'bench_1024x2048_fp16_compile'
}
OUT_FILES = [
    'benchmark.json', 'benchmark_op.json', 'gpu_check.log', 'summary.json'
]
# The runner on the GPU machine starts before mmengine, mmseg and mmcv's
# ops are installed: the command line must not import them (nor torch).
BLOCK_STACK = (
    'import runpy, sys\n'
    'for name in ("torch", "mmcv", "mmengine", "mmseg"):\n'
    '    sys.modules[name] = None\n'
    'sys.argv = sys.argv[1:]\n'
    'runpy.run_path(sys.argv[0], run_name="__main__")\n')


def checkout_paths():
    return gpu_check.CheckPaths(
        root=ROOT,
        setup_py='setup.py',
        setup_cfg='setup.cfg',
        train='tools/train.py',
        benchmark=BENCH,
        benchmark_op=BENCH_OP,
        make_demo_data='tools/make_demo_data.py',
        lma_config='configs/lma/lma-erfnet_4xb4-160k_cityscapes-seq-'
        '512x1024.py',
        erfnet_config='configs/erfnet/erfnet_fcn_4xb4-160k_cityscapes-'
        '512x1024.py',
        tests='tests',
        cuda_tests='tests/ops/test_local_attention_cuda.py',
        whl_dir='.whl')


def run_cli(*args, python=sys.executable, **env):
    """tools/gpu_check.py in a process whose Python cannot import torch,
    mmcv, mmengine or mmseg (the steps run with ``python``)."""
    full_env = dict(os.environ, PYTHON=python, OMP_NUM_THREADS='1', **env)
    for key in ('OUT', 'GPU_CHECK_ONLY', 'GPU_CHECK_BUDGET'):
        if key not in env:
            full_env.pop(key, None)
    return subprocess.run(
        [sys.executable, '-c', BLOCK_STACK, CLI, *map(str, args)],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300)


def load_summary(out):
    with open(osp.join(out, 'summary.json')) as f:
        return json.load(f)


def tool_help(tool):
    return subprocess.run(
        [sys.executable, tool, '--help'],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=True).stdout


def has_wheels():
    whl = osp.join(ROOT, '.whl')
    return osp.isdir(whl) and any(f.endswith('.whl') for f in os.listdir(whl))


def check_skip(step):
    """A skipped step of the dry run must have a reason that holds."""
    name, note = step['name'], step['note']
    if name in ('wheels', 'build_mmcv'):
        assert not has_wheels() and 'make gpu-wheels' in note, step
    elif name == 'build_ext':
        assert shutil.which('nvcc') is None, step
    elif name.startswith('benchmark_op_'):
        assert note.endswith(f'no --dtype option for {name[-4:]}'), step
        assert '--dtype' not in tool_help(BENCH_OP)
    elif name.startswith('bench_'):
        text = tool_help(BENCH)
        if 'no --compile option' in note:
            assert name.endswith('_compile') and '--compile' not in text
        else:
            assert name.split('_')[2] == 'fp16' and 'for fp16' in note, step
            assert not any(
                opt in text for opt in ('--dtype', '--amp', '--fp16'))
    else:
        raise AssertionError(f'{name} was skipped: {note}')


@pytest.mark.slow
def test_dry_run_passes(tmp_path):
    out = tmp_path / 'gpu_check'
    lines = []
    settings = gpu_check.CheckSettings(
        checkout_paths(),
        out_dir=str(out),
        mode='dry-run',
        environ=dict(os.environ, OMP_NUM_THREADS='1'))
    summary = gpu_check.run_check(settings, log=lines.append)
    assert summary['ok'] is True, '\n'.join(lines)[-4000:]
    assert sorted(os.listdir(out)) == OUT_FILES
    assert load_summary(out) == summary
    assert summary['kind'] == 'lma_mmseg.gpu_check'
    assert summary['mode'] == 'dry-run' and summary['budget_s'] == 540
    assert summary['finished'] is True and summary['failed'] == []
    steps = {s['name']: s for s in summary['steps']}
    assert set(steps) == DRY_RUN_STEPS
    for step in steps.values():
        assert step['command'] and step['seconds'] >= 0
        if step['status'] != 'ok':
            assert step['status'] == 'skipped', step
            check_skip(step)
    assert summary['skipped'] == [
        s['name'] for s in summary['steps'] if s['status'] == 'skipped'
    ]
    log = (out / 'gpu_check.log').read_text()
    for name in DRY_RUN_STEPS:
        assert f'===== {name}: {steps[name]["status"]}' in log
    assert f'{len(DRY_RUN_STEPS)} steps, 0 failed' in lines[-1]
    # what each step checked
    if steps['build_ext']['status'] == 'ok':
        assert 'sm_90 kernels' in steps['build_ext']['note']
        assert "for 'sm_90'" in log
        assert steps['build_ext']['command'].startswith('nvcc -cubin')
    assert 'tests collected' in steps['pytest_cuda']['note']
    assert 'collects' in steps['sanitizer']['note']
    assert 'Iter(train) [1/1]' in steps['train_amp']['note']
    # half precision and compiled: the arguments, against the tool's --help
    for name in ('benchmark_op_fp16', 'benchmark_op_bf16',
                 'bench_512x1024_fp16_eager', 'bench_512x1024_fp32_compile',
                 'bench_512x1024_fp16_compile'):
        if steps[name]['status'] == 'ok':
            assert steps[name]['note'].startswith('arguments accepted'), name
            assert ('--dtype' in steps[name]['command']) == (
                'fp16' in name or 'bf16' in name)
    peers = steps['benchmark_op_peers']
    assert peers['status'] == 'ok'
    assert peers['note'].startswith('arguments accepted')
    # the op's peers (unfold reference, sdpa, FlexAttention), each timed
    # against the fused op
    assert '--methods fused unfused reference sdpa flex' in peers['command']
    fig = summary['figures']['benchmark/512x1024_fp32_eager']
    assert fig['lma_streaming_median_ms'] > 0 and fig['erfnet_median_ms'] > 0
    assert fig['overhead_ratio'] > 0
    bench = json.loads((out / 'benchmark.json').read_text())
    run = bench['runs']['512x1024_fp32_eager']
    assert run['kind'] == 'lma_mmseg.benchmark' and run['shape'] == [64, 128]
    assert {r['role'] for r in run['results']} == {'model', 'baseline'}
    assert '--compile' in steps['bench_512x1024_fp32_compile']['command']
    assert set(bench['runs']) == {'512x1024_fp32_eager'}
    ops = json.loads((out / 'benchmark_op.json').read_text())
    assert ops['runs']['fp32']['results']
    assert any(
        k.startswith('benchmark_op/fp32/cpu/erfnet/fused')
        for k in summary['figures'])


def test_gpu_table(tmp_path):
    """The GPU machine's run (not run here): its steps, their order and
    what runs side by side, and the command lines at the real sizes."""
    settings = gpu_check.CheckSettings(checkout_paths(), str(tmp_path))
    stages = gpu_check.build_steps(settings, str(tmp_path), {})
    names = [[[s.name for s in lane] for lane in stage] for stage in stages]
    assert names[:4] == [
        [['wheels']], [['build_mmcv'], ['build_ext']],
        [['make_data', 'import_check']],
        [
            ['pytest_cuda'], ['sanitizer_memcheck'], ['sanitizer_racecheck'],
            ['sanitizer_synccheck'], ['train_amp']
        ]
    ]
    # the timings alone, the op first
    assert all(len(stage) == 1 and len(stage[0]) == 1 for stage in names[4:])
    assert [stage[0][0] for stage in names[4:8]] == [
        'benchmark_op_fp32', 'benchmark_op_peers', 'benchmark_op_fp16',
        'benchmark_op_bf16'
    ]
    steps = {s.name: s for stage in stages for lane in stage for s in lane}
    assert set(steps) == GPU_STEPS
    pytest_cuda = ' '.join(steps['pytest_cuda'].command)
    assert '-m cuda' in pytest_cuda and '--collect-only' not in pytest_cuda
    train = ' '.join(steps['train_amp'].command)
    assert '--amp' in train and 'train_cfg.max_iters=20' in train
    assert steps['build_ext'].env['TORCH_CUDA_ARCH_LIST'] == '9.0'
    assert steps['build_mmcv'].env['CUDA_VISIBLE_DEVICES'] == ''
    for name, step in steps.items():
        if name.startswith(('bench', 'benchmark_op')):
            assert '--device cuda' in ' '.join(step.command), name
    assert '--shape 1024 2048' in ' '.join(
        steps['bench_1024x2048_fp16_compile'].command)
    assert steps['sanitizer_memcheck'].env == dict(
        PYTORCH_NO_CUDA_MEMORY_CACHING='1')


def test_failed_step_is_recorded_and_the_next_one_runs(tmp_path):
    """A step that fails is logged, the following steps still run, and the
    exit status is non-zero."""
    python = tmp_path / 'python'
    # the real interpreter, except that the data generator fails
    python.write_text(
        '#!/bin/sh\n'
        'case "$*" in *make_demo_data*) '
        'echo "no data today" >&2; exit 3;; esac\n'
        f'exec {sys.executable} "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    out = tmp_path / 'out'
    res = run_cli(
        '--dry-run',
        out,
        python=str(python),
        GPU_CHECK_ONLY='^(make_data|import_check)$')
    assert res.returncode == 1, res.stdout[-4000:]
    summary = load_summary(out)
    steps = {s['name']: s for s in summary['steps']}
    assert set(steps) == DRY_RUN_STEPS
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
    res = run_cli(
        '--dry-run',
        tmp_path,
        GPU_CHECK_BUDGET='25',
        GPU_CHECK_ONLY='^(make_data|import_check|pytest_cuda)$')
    assert res.returncode == 0, res.stdout[-4000:]
    summary = load_summary(tmp_path)
    assert summary['budget_s'] == 25 and summary['ok'] is True
    for step in summary['steps']:
        assert step['status'] == 'skipped', step
        assert step['note'].startswith(
            ('no time left', 'not selected', 'no .whl/'))
    assert {
        s['name']
        for s in summary['steps'] if s['note'].startswith('no time left')
    } == {'make_data', 'import_check', 'pytest_cuda'}


def test_a_step_past_its_limit_is_stopped(tmp_path):
    """A command still running at the end of its step's time limit is
    stopped (with what it started) and the step ends."""
    run = gpu_check.StepRun(
        str(tmp_path / 'step.log'), 1, str(tmp_path), os.environ,
        str(tmp_path))
    child = tmp_path / 'child.pid'
    start = time.monotonic()
    with pytest.raises(gpu_check.StepTimeout):
        run.run(['sh', '-c', f'sleep 60 & echo $! > {child}; wait'])
    assert time.monotonic() - start < 15
    status = f'/proc/{int(child.read_text())}/status'
    for _ in range(50):  # gone, or a zombie nobody reaps yet
        if not osp.exists(status) or re.search(r'^State:\s+Z',
                                               open(status).read(), re.M):
            break
        time.sleep(0.1)
    else:
        raise AssertionError('the background child of the step survived')


def test_arguments_are_checked_against_the_help():
    text = (
        'usage: x.py [--dtype {float32,float16}] [--out OUT]\n'
        '  --dtype {float32,float16}\n  --out OUT\n')
    assert gpu_check.check_arguments(
        ['--dtype', 'float16', '--out', 'a'], text) == []
    problems = gpu_check.check_arguments(
        ['--dtype', 'half', '--bogus', '1'], text)
    assert len(problems) == 2
    assert 'half' in problems[0] and '--bogus' in problems[1]


def test_ptxas_summary():
    report = (
        "ptxas info : Compiling entry function '_Z1kPf' for 'sm_90'\n"
        '    8 bytes stack frame, 4 bytes spill stores, 4 bytes '
        'spill loads\nptxas info : Used 40 registers\n')
    assert gpu_check.ptxas_summary(report) == (
        '1 sm_90 kernels, at most 40 registers, 8 bytes stack, 4 bytes '
        'spilled')
    with pytest.raises(gpu_check.StepFailed, match='no sm_90 kernel'):
        gpu_check.ptxas_summary('')


def test_missing_wheels_are_named(tmp_path):
    specs = gpu_check.gpu_wheel_specs(gpu_check.Versions(mmcv='2.1.0'))
    assert ('sdist', 'mmcv==2.1.0') in specs
    assert gpu_check.missing_wheels(str(tmp_path)) == specs
    lines = []
    errors = gpu_check.check_wheels(
        str(tmp_path), osp.join(ROOT, 'setup.cfg'), log=lines.append)
    for kind, spec in specs:
        assert sum(
            f'no {kind} {spec} (run `make gpu-wheels`)' in e
            for e in errors) == 1, spec
    # and the package's own requirements are then met by nothing
    assert any(e.startswith('setup.cfg requires mmengine') for e in errors)
    assert lines[-1].startswith('note: 0 files')


@pytest.mark.parametrize(
    'args,env,message', [
        (['--bogus'], {}, 'unrecognized arguments: --bogus'),
        (['a', 'b'], {}, 'one OUTDIR at most'),
        (['--dry-run', '--fetch-wheels'], {}, 'not allowed with'),
        (['--dry-run'], dict(GPU_CHECK_BUDGET='soon'), 'GPU_CHECK_BUDGET'),
        (['--dry-run'], dict(GPU_CHECK_ONLY='('), 'GPU_CHECK_ONLY'),
    ])
def test_bad_arguments(args, env, message):
    res = run_cli(*args, **env)
    assert res.returncode == 2 and message in res.stdout, res.stdout


def test_help_lists_the_steps():
    res = run_cli('--help')
    assert res.returncode == 0, res.stdout
    for word in ('--dry-run', '--fetch-wheels', 'summary.json',
                 'GPU_CHECK_BUDGET', 'GPU_CHECK_ONLY'):
        assert word in res.stdout
    for name in GPU_STEPS | DRY_RUN_STEPS:
        assert re.search(rf'^  {name} ', res.stdout, re.M), name
