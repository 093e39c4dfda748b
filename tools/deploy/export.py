"""Export the per-frame streaming step of an LMA model for deployment.

Writes ``OUT/step.pt2`` (a ``torch.export`` program of ``model.step`` with
a full memory, the memory keys and values as explicit inputs and outputs),
``OUT/step.json`` (shapes, memory length, preprocessing, classes) and, with
``--aoti``, the AOTInductor package ``OUT/step_aoti.pt2``. See
:mod:`lma_mmseg.apis.export` for how a stream's first frames are handled.

Example::

    python tools/deploy/export.py CONFIG CHECKPOINT --shape 512 1024 \\
        --out work_dirs/export
    python tools/deploy/stream_exported.py work_dirs/export FRAMES_DIR \\
        --out work_dirs/export/preds
"""
import argparse
import json
import sys

from mmengine.config import DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Export the streaming step of an LMA model')
    parser.add_argument('config', help='model config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        required=True,
        metavar=('H', 'W'),
        help='size of the preprocessed frames the program takes')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument(
        '--batch-size', type=int, default=1, help='streams in lockstep')
    parser.add_argument(
        '--aoti',
        action='store_true',
        help='also compile an AOTInductor package (step_aoti.pt2)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value')
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f'--batch-size must be >= 1, got {args.batch_size}')
    if min(args.shape) < 1:
        parser.error(f'--shape must be positive, got {args.shape}')
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    from lma_mmseg.apis import init_model
    from lma_mmseg.apis.export import export_step
    model = init_model(
        args.config,
        args.checkpoint,
        device=args.device,
        cfg_options=args.cfg_options)
    paths = export_step(
        model, args.shape, args.out, batch_size=args.batch_size,
        aoti=args.aoti)
    print(json.dumps(paths, indent=2))
    return paths


if __name__ == '__main__':
    try:
        main()
    except (FileNotFoundError, ValueError, TypeError) as e:
        print(f'export.py: error: {e}', file=sys.stderr)
        sys.exit(2)
