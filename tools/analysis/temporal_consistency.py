"""Temporal consistency (TC, ETC protocol) of a segmentor on video snippets.

Usage::

    python tools/analysis/temporal_consistency.py CONFIG CHECKPOINT
        [--num-frames N | --offsets O ...] [--warmup K]
        [--flow dis|raft] [--dis-preset medium] [--raft-weights FILE]
        [--max-snippets M] [--device cpu] [--out RUN_DIR]
        [--cfg-options KEY=VALUE ...]

For every annotated frame of the config's test dataset, the frames of its
snippet at the given offsets (default: the ``N=4`` frames up to and
including the annotated one) are segmented in order by one streaming
segmenter (memory models run as deployed, each frame encoded once), after
``--warmup`` earlier frames that only fill the memory. The prediction of
each frame is warped onto the frame before it with the optical flow between
the two images (OpenCV DIS by default; ``--flow raft --raft-weights FILE``
uses torchvision's RAFT), pixels flowing in from outside the frame are left
out, and TC is the mIoU of the confusion matrix of all pairs (percent).

Prints TC and writes ``RUN_DIR/temporal_consistency.json`` (``kind:
lma_mmseg.temporal_consistency``, written atomically). When ``RUN_DIR`` also
holds the run's ``tools/test.py`` and ``tools/benchmark.py`` JSONs,
``tools/leaderboard.py RUN_DIR ...`` shows a TC column.
"""
import argparse
import os.path as osp
import sys

from mmengine.config import DictAction

RESULT_NAME = 'temporal_consistency.json'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Temporal consistency (ETC protocol) of a segmentor')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    frames = parser.add_mutually_exclusive_group()
    frames.add_argument(
        '--num-frames',
        type=int,
        default=4,
        help='the N frames up to and including the annotated one '
        '(default 4: the frames of a T=3 clip)')
    frames.add_argument(
        '--offsets',
        type=int,
        nargs='+',
        help='explicit frame offsets from the annotated frame, increasing, '
        '<= 0 (e.g. -6 -4 -2 0)')
    parser.add_argument(
        '--warmup',
        type=int,
        default=0,
        help='frames before the first evaluated one fed to the stream to fill '
        'the memory (default 0)')
    parser.add_argument(
        '--flow', choices=['dis', 'raft'], default='dis',
        help='optical flow: OpenCV DIS (default) or torchvision RAFT')
    parser.add_argument(
        '--dis-preset', choices=['ultrafast', 'fast', 'medium'],
        default='medium', help='DIS preset (default medium)')
    parser.add_argument(
        '--raft-weights', help='local state dict file of torchvision RAFT')
    parser.add_argument(
        '--raft-arch', choices=['raft_large', 'raft_small'],
        default='raft_large')
    parser.add_argument(
        '--max-snippets', type=int, help='only the first M snippets')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda:0')
    parser.add_argument(
        '--out', help=f'run folder for {RESULT_NAME} (default: print only)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value pairs')
    parser.add_argument(
        '--debug',
        action='store_true',
        help='on an error, show the traceback instead of one line')
    args = parser.parse_args(argv)
    if args.flow == 'raft' and not args.raft_weights:
        parser.error('--flow raft needs --raft-weights FILE (a local '
                     'torchvision RAFT state dict)')
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    from mmseg.registry import DATASETS

    from lma_mmseg.apis import init_model
    from lma_mmseg.benchmarks import describe_model
    from lma_mmseg.evaluation.temporal_consistency import (
        TC_KIND, build_flow_estimator, default_offsets,
        evaluate_temporal_consistency)
    from lma_mmseg.fileio import atomic_write_json, output_folder

    if args.out:
        output_folder(args.out, '--out')
    offsets = tuple(args.offsets) if args.offsets else default_offsets(
        args.num_frames)
    if args.flow == 'raft':
        flow = build_flow_estimator(
            dict(
                type='RAFTFlow',
                weights=args.raft_weights,
                arch=args.raft_arch,
                device=args.device))
    else:
        flow = build_flow_estimator(
            dict(type='DISFlow', preset=args.dis_preset))
    model = init_model(
        args.config, args.checkpoint, device=args.device,
        cfg_options=args.cfg_options)
    cfg = model.cfg
    dataset_cfg = cfg.test_dataloader.dataset.copy()
    dataset_cfg.pipeline = []
    dataset = DATASETS.build(dataset_cfg)
    result = evaluate_temporal_consistency(
        model,
        dataset,
        offsets=offsets,
        warmup=args.warmup,
        flow=flow,
        max_snippets=args.max_snippets)
    meta = dict(
        config=osp.abspath(args.config),
        checkpoint=args.checkpoint,
        dataset=dataset_cfg.get('type'),
        data_root=dataset_cfg.get('data_root'),
        data_prefix=dict(dataset_cfg.get('data_prefix') or {}),
        **describe_model(cfg.model))
    out = dict(kind=TC_KIND, **result, meta=meta)
    print(f'TC: {result["TC"]} ({result["pairs"]} frame pairs of '
          f'{result["snippets"]} snippets, offsets {list(offsets)}, warmup '
          f'{args.warmup}, flow {result["flow"]})')
    if args.out:
        path = atomic_write_json(osp.join(args.out, RESULT_NAME), out)
        print(f'wrote {path}')
    return out


if __name__ == '__main__':
    # bad input (e.g. two frames of one number in a snippet folder) or an
    # unwritable --out: one line `temporal_consistency.py: error: ...`, exit 2
    from lma_mmseg.utils import run_main
    sys.exit(run_main(main, prog='temporal_consistency.py'))
