"""Export the per-frame streaming step of an LMA model for deployment.

Writes ``OUT/step.pt2`` (a ``torch.export`` program of ``model.step``, its
fixed-size memory (keys, values and the count of frames seen) as explicit
inputs and outputs), ``OUT/step.json`` (shapes and dtypes, memory offsets,
preprocessing, classes) and, with ``--aoti``, the AOTInductor package
``OUT/step_aoti.pt2``. A stream starts from an all-zero memory and equals
the eager step from its first frame on (see :mod:`lma_mmseg.apis.export`).

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

from lma_mmseg.utils import add_debug_argument, run_main


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
    add_debug_argument(parser)
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
    from lma_mmseg.fileio import output_folder
    output_folder(args.out, '--out')
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


def cli(argv=None) -> int:
    """:func:`main` with bad input (a single-frame model: ``TypeError``) or
    an unwritable ``--out`` as one ``error:`` line and status 2."""
    return run_main(main, argv, prog='export.py', errors=(TypeError, ))


if __name__ == '__main__':
    sys.exit(cli())
