"""FullResIoUMetric: predictions at the working resolution, upsampled by
nearest neighbour to the label files, against them."""
import cv2
import numpy as np
import pytest
import torch
from mmseg.registry import METRICS

import lma_mmseg  # noqa: F401

CLASSES = ('a', 'b', 'c')


def _iou(pred, label, num=3, ignore=255):
    valid = label != ignore
    ious = []
    for c in range(num):
        p, g = (pred == c) & valid, (label == c) & valid
        union = (p | g).sum()
        if union:
            ious.append((p & g).sum() / union)
    return 100 * float(np.mean(ious))


def test_matches_nearest_upsampled_prediction(tmp_path):
    rng = np.random.default_rng(0)
    metric = METRICS.build(dict(type='FullResIoUMetric'))
    metric.dataset_meta = dict(classes=CLASSES)
    preds, labels = [], []
    samples = []
    for i in range(3):
        pred = rng.integers(0, 3, (4, 6))
        label = rng.integers(0, 3, (8, 12)).astype(np.uint8)
        label[0] = 255
        path = str(tmp_path / f'{i}_gtFine_labelTrainIds.png')
        cv2.imwrite(path, label)
        preds.append(pred.repeat(2, 0).repeat(2, 1))
        labels.append(label)
        samples.append(
            dict(pred_sem_seg=dict(data=torch.from_numpy(pred)[None]),
                 seg_map_path=path, img_path=f'{i}.png'))
    metric.process({}, samples)
    result = metric.evaluate(3)
    expected = _iou(np.concatenate([p.ravel() for p in preds]),
                    np.concatenate([g.ravel() for g in labels]))
    assert result['full_res/mIoU'] == pytest.approx(expected, abs=0.01)


def test_needs_the_label_file():
    metric = METRICS.build(dict(type='FullResIoUMetric'))
    metric.dataset_meta = dict(classes=CLASSES)
    with pytest.raises(KeyError, match='seg_map_path'):
        metric.process({}, [
            dict(pred_sem_seg=dict(data=torch.zeros(1, 2, 2)),
                 img_path='x.png')
        ])
    with pytest.raises(ValueError, match='format_only'):
        METRICS.build(dict(type='FullResIoUMetric', format_only=True))
