"""Leaderboard of several runs: markdown table, CSV and a speed/accuracy plot.

Usage::

    python tools/leaderboard.py [RUN_DIR ...] [--run NAME TEST_JSON BENCH_JSON]
        [--out-dir DIR] [--csv FILE] [--png FILE] [--md FILE] [--sort KEY]

A run pairs the JSON of ``tools/test.py`` (accuracy) with the JSON of
``tools/benchmark.py`` (speed):

* ``RUN_DIR``: a folder holding both (e.g. ``tools/test.py ... --out RUN_DIR``
  and ``tools/benchmark.py ... --out RUN_DIR/benchmark.json``); every
  ``*.json`` directly inside is classified by its ``kind`` field, one of
  each at most; the run is named after the folder;
* ``--run NAME TEST_JSON BENCH_JSON``: explicit files, ``-`` for a missing
  one. May be repeated.

Prints a markdown table (method, backbone, memory length, mIoU, category
mIoU, ms/frame, FPS, params, GFLOPs; ms/frame and FPS of the benchmark's
primary mode: streaming for memory models), writes ``leaderboard.csv`` and
draws ``leaderboard.png`` (mIoU against ms/frame, one labelled point per run)
into ``--out-dir`` (default: the current folder). All files are written
atomically.
"""
import argparse
import os.path as osp
import sys

from lma_mmseg.evaluation.leaderboard import (COLUMNS, collect_runs,
                                              markdown_table, plot, write_csv)
from lma_mmseg.fileio import atomic_write_text


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Leaderboard of test + benchmark results of several runs')
    parser.add_argument(
        'run_dirs', nargs='*', metavar='RUN_DIR',
        help='folder holding the test and benchmark JSONs of one run')
    parser.add_argument(
        '--run',
        nargs=3,
        action='append',
        default=[],
        metavar=('NAME', 'TEST_JSON', 'BENCH_JSON'),
        help='a run from explicit files ("-" for a missing one)')
    parser.add_argument(
        '--out-dir', default='.', help='folder of the outputs (default .)')
    parser.add_argument('--csv', help='CSV file (default OUT_DIR/'
                        'leaderboard.csv)')
    parser.add_argument('--png', help='plot file (default OUT_DIR/'
                        'leaderboard.png)')
    parser.add_argument('--md', help='also write the markdown table here')
    parser.add_argument(
        '--sort',
        choices=[k for k, _ in COLUMNS],
        help='sort the rows by this column (descending for mIoU, FPS; '
        'ascending otherwise); default: input order')
    parser.add_argument('--title', help='plot title')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    rows = collect_runs(args.run_dirs, args.run, args.sort)
    table = markdown_table(rows)
    print(table)
    csv_path = args.csv or osp.join(args.out_dir, 'leaderboard.csv')
    png_path = args.png or osp.join(args.out_dir, 'leaderboard.png')
    write_csv(csv_path, rows)
    left_out = plot(png_path, rows, args.title)
    if args.md:
        atomic_write_text(args.md, table + '\n')
    devices = {(r['device'], r['shape']) for r in rows if r['device']}
    if len(devices) > 1:
        print('note: the speeds were measured on different devices or '
              f'resolutions: {sorted(devices, key=str)}')
    if left_out:
        print('not in the plot (no mIoU or no speed): ' + ', '.join(left_out))
    print(f'wrote {csv_path} and {png_path}' +
          (f' and {args.md}' if args.md else ''))
    return rows


if __name__ == '__main__':
    main()
    sys.exit(0)
