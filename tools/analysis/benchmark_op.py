"""Benchmark of the local memory attention op and its peers (command line).

Times the fused op, the unfused pair, the pure PyTorch reference (F.unfold),
``scaled_dot_product_attention`` with a dense neighbourhood mask and, on
request, a plain PyTorch loop and FlexAttention (compiled) at the paper's
ERFNet and PSPNet settings, each peer first checked against the op's output,
next to mmseg's ERFNet 512x1024 forward measured in the same run; prints the
records, the time of every method over the fused op's, and the summary. See
:mod:`lma_mmseg.benchmarks.op_benchmark` for what is measured and how.

Examples::

    python tools/analysis/benchmark_op.py --threads 2 --out work_dirs/op.json
    python tools/analysis/benchmark_op.py --device cpu --shapes erfnet \\
        --methods fused unfused reference plain sdpa flex --threads 2
    python tools/analysis/benchmark_op.py --device cuda \\
        --dtype float32 float16 bfloat16 --methods fused unfused plain
    python tools/analysis/benchmark_op.py --quick   # seconds, tiny shapes
"""
import argparse
import json

import torch


def parse_args(argv=None):
    from lma_mmseg.benchmarks.problem import (DEFAULT_OP_METHODS, DTYPES,
                                              OP_METHODS, OP_SHAPES)
    parser = argparse.ArgumentParser(
        description='Time and memory of the local attention op (fused, '
        'unfused) and of its peers (reference, plain PyTorch, '
        'scaled_dot_product_attention, FlexAttention), each checked '
        'against the op first, and of the ERFNet 512x1024 forward.')
    parser.add_argument(
        '--device',
        nargs='+',
        default=['auto'],
        choices=['auto', 'cpu', 'cuda'],
        help='devices to run on; auto = cpu, plus cuda when available')
    parser.add_argument(
        '--shapes',
        nargs='+',
        default=['erfnet', 'pspnet'],
        choices=sorted(OP_SHAPES),
        help='op settings to measure')
    parser.add_argument(
        '--methods',
        nargs='+',
        default=list(DEFAULT_OP_METHODS),
        choices=OP_METHODS,
        help='implementations to measure (flex compiles first: tens of '
        'seconds on a CPU)')
    parser.add_argument(
        '--dtype',
        nargs='+',
        default=['float32'],
        choices=sorted(DTYPES),
        help='dtypes of the op inputs (the CPU kernels: float32 only)')
    parser.add_argument(
        '--repeats', type=int, default=5, help='timed runs (median)')
    parser.add_argument(
        '--ref-repeats',
        type=int,
        default=2,
        help='timed runs of the (slow) reference')
    parser.add_argument(
        '--warmup', type=int, default=1, help='untimed runs first')
    parser.add_argument(
        '--max-ref-gb',
        type=float,
        default=16.0,
        help='skip the reference (and sdpa) where its estimated memory is '
        'larger')
    parser.add_argument(
        '--model-size',
        type=int,
        nargs=2,
        default=None,
        metavar=('H', 'W'),
        help='input size of the ERFNet forward (default 512 1024, with '
        '--quick 64 128)')
    parser.add_argument(
        '--no-model',
        action='store_true',
        help='skip the ERFNet forward (and the ratio to it)')
    parser.add_argument(
        '--threads',
        type=int,
        default=None,
        help='torch CPU threads (default: torch default)')
    parser.add_argument(
        '--quick',
        action='store_true',
        help='tiny shapes and a 64x128 ERFNet input: a smoke test')
    parser.add_argument(
        '--json',
        action='store_true',
        help='print the results as JSON instead of a table')
    parser.add_argument('--out', default=None, help='write results as JSON')
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.ref_repeats < 1 or args.warmup < 0:
        parser.error('--repeats and --ref-repeats must be >= 1, --warmup '
                     '>= 0')
    if args.threads is not None and args.threads < 1:
        parser.error('--threads must be >= 1')
    if args.model_size is None:
        args.model_size = [64, 128] if args.quick else [512, 1024]
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from lma_mmseg.benchmarks import OpBenchmarkSettings, run_op_benchmark
    from lma_mmseg.benchmarks.report import op_table, peer_table, write_json
    log = (lambda line: None) if args.json else (
        lambda line: print(line, flush=True))
    try:
        settings = OpBenchmarkSettings(
            devices=args.device,
            shapes=args.shapes,
            methods=args.methods,
            dtypes=args.dtype,
            repeats=args.repeats,
            ref_repeats=args.ref_repeats,
            warmup=args.warmup,
            max_ref_gb=args.max_ref_gb,
            model_size=args.model_size,
            model=not args.no_model,
            quick=args.quick)
        result = run_op_benchmark(settings, log=log)
    except (RuntimeError, ValueError) as e:
        raise SystemExit(f'benchmark_op: {e}')
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(op_table(result['results']))
        peers = peer_table(result['results'])
        if peers:
            print('time / time of the fused op (ratio of the medians; '
                  'paired: median of the per-round ratios, interleaved):')
            print(peers)
        for line in result['summary']:
            print(line)
    if args.out:
        write_json(args.out, result)
        if not args.json:
            print(f'results written to {args.out}')
    return result


if __name__ == '__main__':
    main()
