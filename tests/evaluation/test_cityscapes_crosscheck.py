"""Our metric against cityscapesscripts' evalPixelLevelSemanticLabeling."""
import math
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.structures import PixelData
from mmseg.datasets import CityscapesDataset
from mmseg.structures import SegDataSample

import lma_mmseg  # noqa: F401
from lma_mmseg.evaluation import (CityscapesLeaderboardMetric,
                                  cityscapes_label_tables)
from lma_mmseg.fileio import atomic_write_png

CLASSES = CityscapesDataset.METAINFO['classes']


def cityscapes_eval(pred_files, gt_files, pred_dir):
    """Run cityscapesscripts' own pixel-level evaluation on PNG lists."""
    from cityscapesscripts.evaluation import \
        evalPixelLevelSemanticLabeling as CSEval
    args = CSEval.args
    args.predictionPath = pred_dir
    args.predictionWalk = None
    args.evalInstLevelScore = False
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.quiet = True
    return CSEval.evaluateImgLists(list(pred_files), list(gt_files), args)


def crosscheck(metric, pred_files, gt_files, pred_dir):
    ours = metric.evaluate(len(gt_files))
    theirs = cityscapes_eval(pred_files, gt_files, pred_dir)
    assert ours['mIoU'] == pytest.approx(
        100 * theirs['averageScoreClasses'], abs=0.01)
    assert ours['mIoU_category'] == pytest.approx(
        100 * theirs['averageScoreCategories'], abs=0.01)
    for cat in ('flat', 'construction', 'object', 'nature', 'sky', 'human',
                'vehicle'):
        ref = theirs['categoryScores'][cat]
        if math.isnan(ref):
            assert math.isnan(ours[f'IoU.{cat}'])
        else:
            assert ours[f'IoU.{cat}'] == pytest.approx(100 * ref, abs=0.01)
    return ours, theirs


def test_mIoU_matches_cityscapesscripts(tmp_path):
    """Random predictions against ground truth holding every kind of id.

    The ground truth is written as gtFine ``labelIds`` with the ignored
    Cityscapes labels (unlabeled, ego vehicle, guard rail, ...) drawn at
    random where the trainId map is 255; predictions go through the metric's
    own labelIds export, which cityscapesscripts then reads.
    """
    rng = np.random.default_rng(0)
    label_ids, _ = cityscapes_label_tables(CLASSES)
    from cityscapesscripts.helpers.labels import labels
    ignored_ids = np.array(
        [lb.id for lb in labels if lb.ignoreInEval and lb.id >= 0])
    assert len(ignored_ids) == 15
    pred_dir = tmp_path / 'pred'
    metric = CityscapesLeaderboardMetric(
        output_dir=str(pred_dir), results_file=str(tmp_path / 'm.json'))
    metric.dataset_meta = dict(classes=CLASSES)
    gt_files, pred_files = [], []
    for i, city in enumerate(['aachen', 'bremen', 'bremen', 'zurich']):
        h, w = 24, 40
        gt = rng.integers(0, 19, (h, w))
        # terrain is absent from both (NaN), train is only predicted (0)
        gt[np.isin(gt, [9, 16])] = 3
        gt[rng.random((h, w)) < 0.15] = 255
        pred = np.where(rng.random((h, w)) < 0.6, gt,
                        rng.integers(0, 19, (h, w)))
        pred[pred == 255] = 4
        pred[pred == 9] = 8
        stem = f'{city}_{i:06d}_000019'
        gt_file = tmp_path / 'gtFine' / 'val' / city / \
            f'{stem}_gtFine_labelIds.png'
        gt_ids = np.where(gt == 255, rng.choice(ignored_ids, (h, w)),
                          label_ids[np.minimum(gt, 18)])
        atomic_write_png(str(gt_file), gt_ids)
        gt_files.append(str(gt_file))
        sample = SegDataSample(metainfo=dict(
            img_path=f'leftImg8bit/val/{city}/{stem}_leftImg8bit.png'))
        sample.pred_sem_seg = PixelData(data=torch.from_numpy(pred)[None])
        sample.gt_sem_seg = PixelData(data=torch.from_numpy(gt)[None])
        metric.process({}, [sample.to_dict()])
        pred_files.append(
            str(pred_dir / city / f'{stem}_leftImg8bit.png'))
    assert all(osp.isfile(f) for f in pred_files)
    ours, theirs = crosscheck(metric, pred_files, gt_files, str(pred_dir))
    assert 0 < ours['mIoU'] < 100
    assert math.isnan(theirs['classScores']['terrain'])
    assert theirs['classScores']['train'] == 0.0
