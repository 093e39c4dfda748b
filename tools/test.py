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
import os.path as osp
import sys

from mmengine.config import DictAction
from mmengine.dist import is_main_process
from mmengine.runner import Runner

from lma_mmseg.engine import (parse_launcher_args, setup_cpu_distributed,
                              shutdown_distributed)
from lma_mmseg.evaluation.test_config import (SPLITS, build_test_cfg,
                                              save_test_results)


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
    return parse_launcher_args(parser, argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg = build_test_cfg(
        args.config,
        args.checkpoint,
        work_dir=args.work_dir,
        out=args.out,
        format_only=args.format_only,
        split=args.split,
        show_dir=args.show_dir,
        cfg_options=args.cfg_options,
        launcher=args.launcher)
    # torchrun on a machine without CUDA: gloo and a CPU-capable DDP wrapper
    setup_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    results_file = save_test_results(cfg, metrics, is_main_process())
    runner.logger.info(f'results JSON: {osp.abspath(results_file)}')
    return metrics


if __name__ == '__main__':
    try:
        metrics = main()
    finally:
        shutdown_distributed()
    sys.exit(0 if metrics is not None else 1)
