"""Time a segmentor frame by frame: ms/frame, FPS, peak memory, params, FLOPs.

Usage::

    python tools/benchmark.py CONFIG [--checkpoint CKPT]
        [--baseline CONFIG [--baseline-checkpoint CKPT]
         [--baseline-cfg-options KEY=VALUE ...]]
        [--device cpu|cuda] [--shape H W] [--frames N] [--warmup N]
        [--modes single|streaming|reencode ...] [--frames-dir DIR]
        [--threads N]
        [--compile [--compile-backend NAME]] [--dtype float32|float16|bfloat16]
        [--out JSON] [--no-flops] [--cfg-options KEY=VALUE ...]

What is measured and the JSON written to ``--out`` (atomically) are
described in :mod:`lma_mmseg.benchmarks.model_benchmark`.
"""
import argparse
import sys

import torch
from mmengine.config import DictAction

from lma_mmseg.benchmarks import (DTYPES, MODEL_MODES, ModelProblem,
                                  baseline_report, model_report,
                                  run_model_benchmark, write_json)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Benchmark the per-frame speed of a segmentor')
    parser.add_argument('config', help='config file (or mmseg::...)')
    parser.add_argument('--checkpoint', help='checkpoint (default: random)')
    parser.add_argument(
        '--baseline',
        help='config timed in the same run, interleaved: a single-frame '
        'model (single), or a memory model (streaming, e.g. the same config '
        'at other memory offsets with --baseline-cfg-options)')
    parser.add_argument('--baseline-checkpoint', help='baseline checkpoint')
    parser.add_argument(
        '--device',
        default='cuda' if torch.cuda.is_available() else 'cpu',
        help='cpu, cuda or cuda:N (default: cuda when available)')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        default=[512, 1024],
        metavar=('H', 'W'),
        help='input resolution (default 512 1024)')
    parser.add_argument(
        '--frames', type=int, default=200, help='timed frames (default 200)')
    parser.add_argument(
        '--warmup', type=int, default=20, help='warm-up frames (default 20)')
    parser.add_argument(
        '--modes',
        nargs='+',
        choices=MODEL_MODES,
        help='modes of CONFIG (default: streaming reencode for memory '
        'models, single otherwise)')
    parser.add_argument(
        '--threads',
        type=int,
        help='CPU threads of torch (torch.set_num_threads); on a shared or '
        'small machine 1 avoids oversubscription')
    parser.add_argument(
        '--frames-dir', help='folder of frames to use instead of synthetic')
    parser.add_argument('--seed', type=int, default=0, help='synthetic seed')
    parser.add_argument('--out', help='JSON file for the results')
    parser.add_argument(
        '--baseline-out',
        help='also write the baseline\'s results from this interleaved run '
        'as a JSON of its own (e.g. for its leaderboard row)')
    parser.add_argument(
        '--compile',
        action='store_true',
        help='also time every mode through torch.compile, interleaved with '
        'eager (the first compiled frames compile: give enough --warmup)')
    parser.add_argument(
        '--compile-backend',
        default='inductor',
        help='torch.compile backend of --compile (default inductor)')
    parser.add_argument(
        '--dtype',
        choices=list(DTYPES),
        default='float32',
        help='float16/bfloat16 run the networks under torch.autocast '
        '(default float32)')
    parser.add_argument(
        '--no-flops', action='store_true', help='skip the FLOP count')
    parser.add_argument(
        '--no-progress', action='store_true', help='hide the progress bar')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='overrides of CONFIG, key=value pairs')
    parser.add_argument(
        '--baseline-cfg-options',
        nargs='+',
        action=DictAction,
        help='overrides of the --baseline config, key=value pairs')
    args = parser.parse_args(argv)
    for flag in ('baseline_out', 'baseline_cfg_options'):
        if getattr(args, flag) and not args.baseline:
            parser.error(f'--{flag.replace("_", "-")} needs --baseline')
    if args.frames < 1 or args.warmup < 0:
        parser.error('--frames must be >= 1 and --warmup >= 0')
    if args.threads is not None and args.threads < 1:
        parser.error('--threads must be >= 1')
    if min(args.shape) < 8:
        parser.error('--shape must be at least 8 8')
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    import lma_mmseg  # noqa: F401  (registers the components)
    try:
        problem = ModelProblem(
            args.config,
            checkpoint=args.checkpoint,
            cfg_options=args.cfg_options,
            baseline=args.baseline,
            baseline_checkpoint=args.baseline_checkpoint,
            baseline_cfg_options=args.baseline_cfg_options,
            device=args.device,
            shape=args.shape,
            frames=args.frames,
            warmup=args.warmup,
            modes=args.modes,
            dtype=args.dtype,
            compile=args.compile,
            compile_backend=args.compile_backend,
            frames_dir=args.frames_dir,
            seed=args.seed)
    except ValueError as e:
        raise SystemExit(f'benchmark: {e}')
    res = run_model_benchmark(
        problem,
        threads=args.threads,
        flops=not args.no_flops,
        progress=not args.no_progress)
    print(model_report(res))
    if args.out:
        write_json(args.out, res)
        print(f'results written to {args.out}')
    if args.baseline_out:
        write_json(args.baseline_out, baseline_report(res))
        print(f'baseline results written to {args.baseline_out}')
    return res


if __name__ == '__main__':
    main()
    sys.exit(0)
