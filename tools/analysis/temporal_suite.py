"""Temporal benchmark suite: single-frame ERFNet against LMA variants on
every degradation mode of the synthetic video generator.

Usage::

    python tools/analysis/temporal_suite.py [--work-dir DIR]
        [--modes glare occlusion blur noise dropout motion]
        [--variants light paper residual residual-prior residual-w3]
        [--iters BASE TUNE] [--size H W] [--severity S]
        [--num-train N] [--num-val N] [--bench-frames N]
        [--base-config CONFIG] [--lma-config CONFIG] [--isolate]

For every mode: synthetic data (``lma_mmseg.datasets.prep.synthetic``), the
single-frame model trained ``BASE`` iterations, then from it, ``TUNE``
iterations each, the single-frame twin (same total budget) and every LMA
variant. Writes ``suite.json``, ``suite.md`` (mIoU, gain over the twin,
ms/frame) and ``suite.png`` (gain per mode and variant) in the work dir,
updated after every mode; a restarted suite reuses finished runs. See
:mod:`lma_mmseg.benchmarks.temporal_suite`.
"""
import argparse
import os
import os.path as osp
import sys

# OpenMP threads that spin while waiting make CPU training many times slower
# when the cores are shared with other processes; passive waiting costs
# little on an idle machine. Set OMP_WAIT_POLICY to override.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import lma_mmseg.benchmarks.temporal_suite as suite  # noqa: E402

#: The demo single-frame ERFNet and the LMA recipe the variants override.
BASE_CONFIG = osp.join(_ROOT, 'configs', 'demo', 'erfnet_demo.py')
LMA_CONFIG = osp.join(_ROOT, 'configs', 'demo', 'lma-erfnet_demo-light.py')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train single-frame ERFNet and LMA variants on every '
        'degradation mode of the synthetic video data; write a table and a '
        'plot')
    parser.add_argument(
        '--work-dir',
        default='work_dirs/temporal_suite',
        help='output folder (data, runs, suite.{json,md,png})')
    parser.add_argument(
        '--modes',
        nargs='+',
        default=list(suite.DEFAULT_MODES),
        choices=list(suite.SUITE_MODES),
        help='degradation modes')
    parser.add_argument(
        '--variants',
        nargs='+',
        default=list(suite.DEFAULT_VARIANTS),
        choices=list(suite.VARIANTS),
        help='LMA variants: ' + '; '.join(f'{k}: {v["desc"]}'
                                          for k, v in suite.VARIANTS.items()))
    parser.add_argument(
        '--iters',
        type=int,
        nargs=2,
        default=(400, 200),
        metavar=('BASE', 'TUNE'),
        help='single-frame iterations, then fine-tuning iterations of every '
        'LMA variant and of the single-frame twin')
    parser.add_argument(
        '--size',
        type=int,
        nargs=2,
        default=(64, 128),
        metavar=('H', 'W'),
        help='frame size of the generated data')
    parser.add_argument('--severity', type=float, default=1.0)
    parser.add_argument('--num-train', type=int, default=60)
    parser.add_argument('--num-val', type=int, default=20)
    parser.add_argument('--seed', type=int, default=0, help='data seed')
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument(
        '--tune-seeds',
        type=int,
        nargs='+',
        help='training seeds of the twin and the variants (default: the '
        'configs\' seed): every cell is trained once per seed from the same '
        'single-frame model (runs/MODE/NAME-seedN) and the table gives the '
        'mean and the spread')
    seeds.add_argument(
        '--tune-seed',
        type=int,
        help='one training seed: the same as --tune-seeds N')
    parser.add_argument(
        '--no-tc',
        action='store_true',
        help='do not measure the temporal consistency (TC) of the runs')
    parser.add_argument(
        '--bench-frames',
        type=int,
        default=30,
        help='timed frames per variant (0: no timing)')
    parser.add_argument('--bench-warmup', type=int, default=5)
    parser.add_argument(
        '--workers', type=int, default=1, help='training data workers')
    parser.add_argument(
        '--base-config',
        default=BASE_CONFIG,
        help='single-frame config (default: the demo ERFNet)')
    parser.add_argument(
        '--lma-config',
        default=LMA_CONFIG,
        help='LMA config the variants override (default: the light demo '
        'recipe, window 7)')
    parser.add_argument(
        '--isolate',
        action='store_true',
        help='train every run in a child process of its own')
    return parser.parse_args(argv)


def settings_from_args(args) -> suite.SuiteSettings:
    """The suite settings of the parsed command line."""
    return suite.SuiteSettings(
        base_config=args.base_config,
        lma_config=args.lma_config,
        modes=args.modes,
        variants=args.variants,
        iters=tuple(args.iters),
        size=tuple(args.size),
        severity=args.severity,
        num_train=args.num_train,
        num_val=args.num_val,
        seed=args.seed,
        bench_frames=args.bench_frames,
        bench_warmup=args.bench_warmup,
        workers=args.workers,
        tune_seeds=(tuple(args.tune_seeds) if args.tune_seeds else
                    (args.tune_seed, )),
        tc=not args.no_tc,
        isolate=args.isolate)


def main(argv=None):
    args = parse_args(argv)
    try:
        settings = settings_from_args(args)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f'temporal_suite.py: error: {exc}')
    result = suite.run_suite(
        args.work_dir, settings, log=lambda msg: print(msg, flush=True))
    with open(osp.join(args.work_dir, 'suite.md')) as f:
        print(f.read())
    print(f'written: {osp.join(args.work_dir, "suite.json")}, '
          f'{osp.join(args.work_dir, "suite.md")}, '
          f'{osp.join(args.work_dir, "suite.png")} '
          f'({result["seconds"] / 60:.1f} min)')
    return result


if __name__ == '__main__':
    main()
