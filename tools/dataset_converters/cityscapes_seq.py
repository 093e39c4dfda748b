"""Prepare Cityscapes video data: only the frames the clips need.

Usage::

    python tools/dataset_converters/cityscapes_seq.py ZIP_OR_DIR ...
        [--out data/cityscapes] [--splits train val] [--offsets -3 -2 -1]
        [--config CONFIG] [--workers 2] [--no-label-train-ids]
    python tools/dataset_converters/cityscapes_seq.py --check --config CONFIG
        [--out DIR]

``ZIP_OR_DIR``: ``leftImg8bit_sequence_trainvaltest.zip`` and
``gtFine_trainvaltest.zip`` (or a folder holding them, or a folder with
extracted ``leftImg8bit_sequence/`` / ``gtFine/`` trees). For every annotated
frame of the splits, the frames at ``--offsets`` and the annotated frame are
extracted from the sequence archive (member by member, never the whole
archive), then ``gtFine`` of the splits, then ``*_gtFine_labelTrainIds.png``
is created with cityscapesscripts' label table in ``--workers`` processes.
Every file is written atomically; a rerun skips what is complete and
finishes what an interrupted run left. ``--config`` takes the splits and
offsets of the config's video datasets (and ``--out`` defaults to its
``data_root``).

``--check`` lists every file the config's clips need that ``--out`` lacks
or that does not decode with its annotated frame's size, one per line, and
exits with status 1 if any (0 otherwise).

Hostile or broken input is refused with one line ``cityscapes_seq.py:
error: ...`` and exit status 2 (``--debug`` shows the traceback): a member
whose destination would lie outside ``--out``, a link out of an extracted
tree, a member that is not a decodable image of its snippet's size, a
polygon file claiming another size than its frame, an ``--out`` that cannot
be written (a file, read-only, full) or that another run is writing into
(the message names its pid and host). Nothing half-written is left.
"""
import argparse
import sys

from lma_mmseg.utils import add_debug_argument, run_main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Extract the Cityscapes sequence frames that the clips '
        'need, plus gtFine and labelTrainIds')
    parser.add_argument(
        'sources', nargs='*', metavar='ZIP_OR_DIR',
        help='official zip files, folders holding them, or extracted trees')
    parser.add_argument(
        '--out', help='Cityscapes root to write (default: the config\'s '
        'data_root, else data/cityscapes)')
    parser.add_argument(
        '--splits', nargs='+', default=['train', 'val'],
        choices=['train', 'val', 'test'], help='default: train val')
    parser.add_argument(
        '--offsets', type=int, nargs='+', default=[-3, -2, -1],
        help='memory frame offsets before each annotated frame (default '
        '-3 -2 -1); the annotated frame is always extracted')
    parser.add_argument(
        '--config', help='take the splits and offsets of this config\'s '
        'video datasets instead of --splits/--offsets')
    parser.add_argument(
        '--workers', type=int, default=2,
        help='processes creating labelTrainIds (default 2)')
    parser.add_argument(
        '--no-label-train-ids', action='store_true',
        help='do not create *_gtFine_labelTrainIds.png')
    parser.add_argument(
        '--check', action='store_true',
        help='only list the files the clips need that --out lacks or that '
        'do not decode with the expected size; exit 1 if any')
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if not args.check and not args.sources:
        parser.error('give the archives (ZIP_OR_DIR ...) or --check')
    if args.workers < 1:
        parser.error(f'--workers must be >= 1, got {args.workers}')
    if any(o >= 0 for o in args.offsets):
        parser.error(f'--offsets must be negative, got {args.offsets}')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from lma_mmseg.datasets.prep import cityscapes_seq as prep

    data_root = None
    if args.config:
        offsets, data_root = prep.offsets_from_config(args.config)
    else:
        offsets = {split: list(args.offsets) for split in args.splits}
    out = args.out or data_root or 'data/cityscapes'
    plan = ', '.join(f'{s}: {o}' for s, o in offsets.items())
    if args.check:
        problems = prep.check(out, offsets)
        for path in problems:
            print(path)
        print(f'{len(problems)} missing or bad file(s) under {out} for '
              f'offsets {plan}', file=sys.stderr)
        return 1 if problems else 0
    print(f'preparing {out} for offsets {plan}')
    summary = prep.prepare(
        args.sources, out, offsets, workers=args.workers,
        label_train_ids=not args.no_label_train_ids)
    prep.log_summary(summary)
    return 0


def cli(argv=None) -> int:
    """:func:`main` with bad input as one ``error:`` line and status 2."""
    from lma_mmseg.datasets.prep.cityscapes_seq import PrepError
    return run_main(main, argv, prog='cityscapes_seq.py', errors=(PrepError, ))


if __name__ == '__main__':
    sys.exit(cli())
