"""Temporal benchmark suite: single-frame ERFNet against LMA variants on
every degradation mode of the synthetic video generator.

Usage::

    python tools/analysis/temporal_suite.py [--work-dir DIR]
        [--modes glare occlusion blur noise dropout motion]
        [--variants light paper residual residual-prior residual-w3]
        [--iters BASE TUNE] [--size H W] [--severity S]
        [--num-train N] [--num-val N] [--bench-frames N]

For every mode: synthetic data (``lma_mmseg.datasets.synthetic``), the
single-frame model trained ``BASE`` iterations, then from it, ``TUNE``
iterations each, the single-frame twin (same total budget) and every LMA
variant. Writes ``suite.json``, ``suite.md`` (mIoU, gain over the twin,
ms/frame) and ``suite.png`` (gain per mode and variant) in the work dir,
updated after every mode; a restarted suite reuses finished runs. See
:mod:`lma_mmseg.evaluation.temporal_suite`.
"""
import argparse
import os.path as osp
import sys

_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import lma_mmseg.evaluation.temporal_suite as suite  # noqa: E402


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
    parser.add_argument(
        '--tune-seed',
        type=int,
        help='training seed of the twin and the variants (default: the '
        'configs\' seed): repeats their runs with another seed from the same '
        'single-frame model, in runs/MODE/NAME-seedN')
    parser.add_argument(
        '--bench-frames',
        type=int,
        default=30,
        help='timed frames per variant (0: no timing)')
    parser.add_argument('--bench-warmup', type=int, default=5)
    parser.add_argument(
        '--workers', type=int, default=1, help='training data workers')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    result = suite.run_suite(
        args.work_dir,
        modes=args.modes,
        variants=args.variants,
        iters=tuple(args.iters),
        size=tuple(args.size),
        severity=args.severity,
        num_train=args.num_train,
        num_val=args.num_val,
        seed=args.seed,
        tune_seed=args.tune_seed,
        bench_frames=args.bench_frames,
        bench_warmup=args.bench_warmup,
        workers=args.workers,
        log=lambda msg: print(msg, flush=True))
    with open(osp.join(args.work_dir, 'suite.md')) as f:
        print(f.read())
    print(f'written: {osp.join(args.work_dir, "suite.json")}, '
          f'{osp.join(args.work_dir, "suite.md")}, '
          f'{osp.join(args.work_dir, "suite.png")} '
          f'({result["seconds"] / 60:.1f} min)')


if __name__ == '__main__':
    main()
