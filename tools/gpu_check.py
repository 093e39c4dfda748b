"""The GPU check of lma_mmseg (command line): everything that needs a CUDA
device, in one call that stays within 9 minutes on a machine with one H200
(Python 3.12, torch with CUDA, nvcc, 16 cores, no network).

    python tools/gpu_check.py [OUTDIR]             on the GPU machine
    python tools/gpu_check.py --dry-run [OUTDIR]   every step that needs no
                                                   GPU, on a CPU machine
    python tools/gpu_check.py --fetch-wheels       download .whl/ (make
                                                   gpu-wheels)

The steps, their commands and the runner are in
lma_mmseg.benchmarks.gpu_check; this script passes the checkout's paths
and the environment's settings to it. A step that fails is logged and the
next one runs.

OUTDIR (default: $OUT when set, else work_dirs/gpu_check) receives
  gpu_check.log      each step's command and output, in order
  summary.json       mode, each step's status (ok, failed, timeout,
                     skipped), seconds, command and a one-line note, and the
                     figures read off the benchmarks
  benchmark_op.json  the op benchmark results, one entry per run
  benchmark.json     the model benchmark results, one entry per run
Exit status: 0 when no step failed or timed out; 2 for bad arguments.

Environment: PYTHON (the steps' interpreter, default this one);
GPU_CHECK_BUDGET (seconds for the whole run, default 540); GPU_CHECK_ONLY (a
regular expression: run only the steps whose name it matches);
GPU_CHECK_SITE (where the wheels go, default /tmp/gpu_check_site);
GPU_CHECK_KEEP (set: keep the work folder); MMCV_VERSION, MMENGINE_VERSION,
MMSEG_VERSION (the Makefile passes its own).
"""
import argparse
import importlib
import os
import os.path as osp
import sys
import types

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_check():
    """``lma_mmseg.benchmarks.gpu_check``, imported from this checkout
    without the package's ``__init__``.

    ``import lma_mmseg`` registers every component, which needs mmengine,
    mmseg and mmcv's ops: on the GPU machine those are what the check
    installs. The check's module needs only the standard library and
    ``lma_mmseg.fileio``.
    """
    if 'lma_mmseg' not in sys.modules:
        for name in ('lma_mmseg', 'lma_mmseg.benchmarks'):
            module = types.ModuleType(name)
            module.__path__ = [osp.join(ROOT, *name.split('.'))]
            sys.modules[name] = module
    return importlib.import_module('lma_mmseg.benchmarks.gpu_check')


def checkout_paths(check):
    """What the check runs, in this checkout."""
    return check.CheckPaths(
        root=ROOT,
        setup_py='setup.py',
        setup_cfg='setup.cfg',
        train='tools/train.py',
        benchmark='tools/benchmark.py',
        benchmark_op='tools/analysis/benchmark_op.py',
        make_demo_data='tools/make_demo_data.py',
        lma_config='configs/lma/lma-erfnet_4xb4-160k_cityscapes-seq-'
        '512x1024.py',
        erfnet_config='configs/erfnet/erfnet_fcn_4xb4-160k_cityscapes-'
        '512x1024.py',
        tests='tests',
        cuda_tests='tests/ops/test_local_attention_cuda.py',
        whl_dir='.whl')


def parse_args(check, argv=None, environ=None):
    """The arguments (with ``python`` and ``versions`` from the
    environment) and, unless ``--fetch-wheels``, the check's settings."""
    environ = os.environ if environ is None else environ
    paths = checkout_paths(check)
    parser = argparse.ArgumentParser(
        prog='gpu_check.py',
        description=__doc__.split('\n\n')[0],
        epilog='steps:\n' + check.describe_steps(paths) + '\n\n' +
        __doc__.split('\n\n', 3)[3],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        '--dry-run',
        action='store_true',
        help='every step that needs no GPU, on a CPU machine')
    mode.add_argument(
        '--fetch-wheels',
        action='store_true',
        help='download what the GPU machine needs into .whl/ and check it')
    parser.add_argument(
        'outdir',
        nargs='*',
        help='where the log, the summary and the results go')
    args = parser.parse_args(argv)
    if len(args.outdir) > 1:
        parser.error(f'one OUTDIR at most, got {len(args.outdir)}')
    if args.fetch_wheels and args.outdir:
        parser.error('--fetch-wheels takes no OUTDIR')
    try:
        budget = int(environ.get('GPU_CHECK_BUDGET', '540'))
    except ValueError:
        parser.error(
            'GPU_CHECK_BUDGET: a number of seconds, got '
            f'{environ["GPU_CHECK_BUDGET"]!r}')
    args.versions = check.Versions(
        mmcv=environ.get('MMCV_VERSION', check.Versions.mmcv),
        mmengine=environ.get('MMENGINE_VERSION', check.Versions.mmengine),
        mmseg=environ.get('MMSEG_VERSION', check.Versions.mmseg))
    args.python = environ.get('PYTHON') or sys.executable
    if args.fetch_wheels:
        return args, None
    if args.outdir:
        out_dir = osp.abspath(args.outdir[0])
    elif environ.get('OUT'):
        out_dir = osp.abspath(environ['OUT'])
    else:
        out_dir = osp.join(ROOT, 'work_dirs', 'gpu_check')
    try:
        settings = check.CheckSettings(
            paths,
            out_dir=out_dir,
            mode='dry-run' if args.dry_run else 'gpu',
            python=args.python,
            budget_s=budget,
            only=environ.get('GPU_CHECK_ONLY') or None,
            site=environ.get('GPU_CHECK_SITE', '/tmp/gpu_check_site'),
            versions=args.versions,
            keep_work=bool(environ.get('GPU_CHECK_KEEP')))
    except ValueError as e:
        parser.error(
            str(e).replace('CheckSettings.budget_s',
                           'GPU_CHECK_BUDGET').replace(
                               'CheckSettings.only', 'GPU_CHECK_ONLY'))
    return args, settings


def main(argv=None):
    check = load_check()
    args, settings = parse_args(check, argv)

    def log(line):
        print(line, flush=True)

    if settings is None:
        paths = checkout_paths(check)
        return check.fetch_wheels(
            paths.abs(paths.whl_dir),
            paths.abs(paths.setup_cfg),
            python=args.python,
            versions=args.versions,
            log=log)
    summary = check.run_check(settings, log=log)
    return 0 if summary['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
