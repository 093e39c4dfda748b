"""Test a segmentor with the Cityscapes leaderboard metric (mmengine Runner).

Usage::

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out DIR]
        [--format-only] [--split {val,test}] [--show-dir DIR]
        [--cfg-options KEY=VALUE ...]

Like mmseg's ``tools/test.py``, but the test evaluator is replaced by
``CityscapesLeaderboardMetric`` (keeping the config's ``ignore_index``):

* on val it prints per-class IoU/Acc, mIoU, mAcc, aAcc and the 7 Cityscapes
  category IoUs, and writes them to ``cityscapes_metrics.json`` in ``--out``
  when given, else in the work dir;
* ``--format-only`` runs on the test split (unless ``--split`` says
  otherwise) and writes one Cityscapes ``labelIds`` PNG per key frame,
  ``{out}/{city}/{city}_{seq}_{frame}_leftImg8bit.png``, then
  ``{out}/cityscapes_submission.zip`` ready for the evaluation server (default
  ``{work_dir}/cityscapes_test_results``); every file is written atomically;
* ``--out`` on val also keeps the labelIds PNGs (for cityscapesscripts);
* ``--show-dir`` turns on mmseg's ``SegVisualizationHook``: colorized overlays
  of the key frame drawn by ``SegLocalVisualizer`` land in
  ``{show_dir}/vis_data/vis_image``.

With ``--format-only`` no ground truth is read (see :func:`unlabelled`).
``--split`` switches the test dataloader between ``val`` and ``test`` by
rewriting the last ``val``/``test``/``train`` folder of every
``data_prefix`` entry of the test dataset.
"""
import argparse
import os
import os.path as osp
import sys

from mmengine.config import Config, ConfigDict, DictAction
from mmengine.runner import Runner

from lma_mmseg.engine import setup_cpu_distributed
from lma_mmseg.evaluation.model_info import describe_model

SPLITS = ('train', 'val', 'test')
METRIC = 'CityscapesLeaderboardMetric'
RESULTS_JSON = 'cityscapes_metrics.json'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Test (and evaluate) a segmentor with the Cityscapes '
        'leaderboard metric')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir', help='work dir (logs; the metrics JSON when no --out)')
    parser.add_argument(
        '--out',
        help='folder for the labelIds PNGs, the submission zip (with '
        '--format-only) and the metrics JSON')
    parser.add_argument(
        '--format-only',
        action='store_true',
        help='only export labelIds PNGs and a zip for the Cityscapes test '
        'server (no evaluation); uses the test split unless --split is given')
    parser.add_argument(
        '--split',
        choices=SPLITS,
        help='rewrite the test dataset folders to this split')
    parser.add_argument(
        '--show-dir',
        help='folder for colorized overlays of the key frames '
        '(SegLocalVisualizer)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value pairs')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def switch_split(dataset_cfg: ConfigDict, split: str) -> None:
    """Point ``dataset_cfg.data_prefix`` at ``split`` in place.

    Every ``data_prefix`` value whose last folder is ``train``, ``val`` or
    ``test`` gets that folder replaced by ``split``.

    Raises:
        ValueError: The dataset has no ``data_prefix`` or none of its entries
            ends with a split folder.
    """
    prefix = dataset_cfg.get('data_prefix')
    if not prefix:
        raise ValueError(
            f'--split {split}: test_dataloader.dataset '
            f'({dataset_cfg.get("type")}) has no data_prefix to rewrite; '
            'set the folders with --cfg-options instead')
    changed = False
    for key, value in prefix.items():
        if not isinstance(value, str):
            continue
        head, last = osp.split(value.rstrip('/'))
        if last in SPLITS:
            prefix[key] = osp.join(head, split) if head else split
            changed = True
    if not changed:
        raise ValueError(
            f'--split {split}: no entry of test_dataloader.dataset.'
            f'data_prefix={dict(prefix)} ends with a split folder '
            f'{SPLITS}; set the folders with --cfg-options instead')


def unlabelled(dataset_cfg: ConfigDict) -> None:
    """Test ``dataset_cfg`` without ground truth, in place (format-only).

    The Cityscapes test split has no labels: ``*LoadAnnotations`` steps are
    dropped from the pipeline and ``data_prefix.seg_map_path`` is set to
    ``''``. A video dataset then lists its samples from ``key_img_path``,
    which defaults to ``leftImg8bit/{split}`` next to a
    ``leftImg8bit_sequence/{split}`` image folder (the annotated frames).
    """
    pipeline = dataset_cfg.get('pipeline')
    if pipeline:
        dataset_cfg.pipeline = [
            t for t in pipeline
            if not str(t.get('type', '')).endswith('LoadAnnotations')
        ]
    prefix = dataset_cfg.get('data_prefix')
    if not prefix:
        return
    if 'seg_map_path' in prefix:
        prefix['seg_map_path'] = ''
    img = str(prefix.get('img_path', '')).rstrip('/')
    head, split = osp.split(img)
    if osp.basename(head) == 'leftImg8bit_sequence' and not prefix.get(
            'key_img_path'):
        prefix['key_img_path'] = osp.join(
            osp.dirname(head), 'leftImg8bit', split)


def build_test_cfg(args) -> Config:
    """The config the Runner tests with, from the command-line ``args``."""
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config file {args.config!r} not found')
    if not osp.isfile(args.checkpoint) and '://' not in args.checkpoint:
        raise FileNotFoundError(
            f'checkpoint file {args.checkpoint!r} not found')
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint

    for key in ('test_dataloader', 'test_cfg'):
        if cfg.get(key) is None:
            raise ValueError(f'config {args.config!r} has no {key}')
    split = args.split or ('test' if args.format_only else None)
    if split is not None:
        switch_split(cfg.test_dataloader.dataset, split)
    if args.format_only:
        unlabelled(cfg.test_dataloader.dataset)

    out = args.out
    if args.format_only and out is None:
        out = osp.join(cfg.work_dir, 'cityscapes_test_results')
    old = cfg.get('test_evaluator') or {}
    if isinstance(old, (list, tuple)):
        old = old[0] if old else {}
    meta = dict(
        config=osp.abspath(args.config),
        checkpoint=args.checkpoint,
        split=split or _current_split(cfg.test_dataloader.dataset),
        **describe_model(cfg.model))
    cfg.test_evaluator = dict(
        type=METRIC,
        ignore_index=old.get('ignore_index', 255),
        output_dir=out,
        format_only=args.format_only,
        results_file=osp.join(out or cfg.work_dir, RESULTS_JSON),
        meta=meta)

    if args.show_dir:
        hooks = cfg.get('default_hooks') or ConfigDict()
        vis = hooks.get('visualization') or ConfigDict(
            type='SegVisualizationHook')
        vis.draw = True
        vis.interval = 1
        hooks.visualization = vis
        cfg.default_hooks = hooks
        visualizer = cfg.get('visualizer') or ConfigDict(
            type='SegLocalVisualizer',
            vis_backends=[dict(type='LocalVisBackend')],
            name='visualizer')
        visualizer.save_dir = args.show_dir
        # the Runner names it after the experiment (timestamped), so that a
        # visualizer of an earlier run in this process is not reused
        visualizer.pop('name', None)
        cfg.visualizer = visualizer
    return cfg


def _current_split(dataset_cfg) -> str:
    prefix = dataset_cfg.get('data_prefix') or {}
    for value in prefix.values():
        if isinstance(value, str):
            last = osp.basename(value.rstrip('/'))
            if last in SPLITS:
                return last
    return 'unknown'


def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg = build_test_cfg(args)
    # torchrun on a machine without CUDA: gloo and a CPU-capable DDP wrapper
    setup_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    results_file = cfg.test_evaluator['results_file']
    runner.logger.info(f'results JSON: {osp.abspath(results_file)}')
    return metrics


if __name__ == '__main__':
    sys.exit(0 if main() is not None else 1)
