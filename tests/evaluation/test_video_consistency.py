"""Video consistency VC_n (VSPW toolkit definition)."""
import numpy as np
import pytest
import torch

from lma_mmseg.evaluation.metrics import VideoConsistencyMetric
from lma_mmseg.evaluation.video_consistency import (video_consistency,
                                                    video_consistency_windows)

# Video A, 5 frames of 1x4 pixels (hand-computed in the comments below).
GT_A = [[1, 1, 2, 3], [1, 1, 2, 4], [1, 1, 2, 3], [1, 2, 2, 3], [1, 2, 2, 3]]
PRED_A = [[1, 1, 2, 3], [1, 0, 2, 3], [1, 1, 2, 3], [1, 1, 2, 3],
          [1, 1, 5, 3]]
# Video B, 3 frames of 1x2 pixels: the ground truth never changes, the
# prediction of pixel 1 does.
GT_B = [[7, 7]] * 3
PRED_B = [[7, 7], [7, 6], [7, 7]]


def _frames(gt, pred):
    return [(np.array([g]), np.array([p])) for g, p in zip(gt, pred)]


def test_hand_computed_windows():
    # n=3, windows start at frames 0 and 1 (range(L - n)); the window
    # starting at frame 2 is the toolkit's left-out last window.
    # window 0-2: GT stable at pixels 0, 1, 2 (pixel 3: 3,4,3); prediction
    #   also stable at 0 and 2 (pixel 1: 1,0,1) -> 2/3
    # window 1-3: GT stable at 0 and 2; prediction stable at both -> 1
    # window 2-4: GT stable at 0, 2, 3; prediction at 0 and 3 -> 2/3
    scores = video_consistency_windows(_frames(GT_A, PRED_A), windows=(3, ))
    assert scores[3] == pytest.approx([2 / 3, 1.0])
    scores_last = video_consistency_windows(
        _frames(GT_A, PRED_A), windows=(3, ), include_last_window=True)
    assert scores_last[3] == pytest.approx([2 / 3, 1.0, 2 / 3])
    # video B has L = n = 3 frames: no window for the toolkit; its last
    # window keeps 1 of 2 stable pixels
    b = video_consistency_windows(_frames(GT_B, PRED_B), windows=(3, ))
    assert b[3] == []
    b_last = video_consistency_windows(
        _frames(GT_B, PRED_B), windows=(3, ), include_last_window=True)
    assert b_last[3] == [0.5]
    # pooled over all windows of both videos
    vc, count = video_consistency([scores, b], windows=(3, ))[3]
    assert vc == pytest.approx(5 / 6) and count == 2
    vc, count = video_consistency([scores_last, b_last], windows=(3, ))[3]
    assert vc == pytest.approx((2 / 3 + 1 + 2 / 3 + 0.5) / 4)
    assert count == 4


def test_ignored_pixels_count_unless_excluded():
    gt = [[255, 1]] * 3
    pred = [[0, 1], [1, 1], [0, 1]]
    # n=2, windows 0-1 only: both pixels keep their GT, pixel 0's prediction
    # changes
    assert video_consistency_windows(_frames(gt, pred), (2, ))[2] == [0.5]
    assert video_consistency_windows(
        _frames(gt, pred), (2, ), exclude_ignored=True)[2] == [1.0]


def test_no_stable_pixel_is_left_out_of_the_mean():
    gt = [[1], [2], [3], [4]]
    scores = video_consistency_windows(_frames(gt, gt), (2, ))
    assert np.isnan(scores[2]).all() and len(scores[2]) == 2
    vc, count = video_consistency([scores], (2, ))[2]
    assert np.isnan(vc) and count == 0


def _toolkit_windows(gts, preds, n):
    """The toolkit's definition, pairwise with each window's first frame."""
    accs = []
    for i in range(len(gts) - n):
        stable = np.ones(gts[0].shape, bool)
        same = np.ones(gts[0].shape, bool)
        for j in range(1, n):
            stable &= gts[i] == gts[i + j]
            same &= preds[i] == preds[i + j]
        total = stable.sum()
        accs.append((same & stable).sum() / total if total else np.nan)
    return accs


def test_matches_the_pairwise_definition_on_random_videos():
    rng = np.random.RandomState(0)
    for length in (7, 9, 20):
        gts = [rng.randint(0, 3, (5, 6)) for _ in range(length)]
        preds = [np.where(rng.rand(5, 6) < 0.9, g, 9) for g in gts]
        ours = video_consistency_windows(zip(gts, preds), (2, 4, 8))
        for n in (2, 4, 8):
            np.testing.assert_allclose(
                ours[n], _toolkit_windows(gts, preds, n), equal_nan=True)


def _sample(path, gt, pred):
    return dict(
        img_path=path,
        gt_sem_seg=dict(data=torch.tensor(np.array([gt]))[None]),
        pred_sem_seg=dict(data=torch.tensor(np.array([pred]))[None]))


def test_metric_groups_videos_and_orders_frames():
    metric = VideoConsistencyMetric(windows=(3, ))
    samples = [
        _sample(f'/d/A/origin/{t:08d}.jpg', g, p)
        for t, (g, p) in enumerate(zip(GT_A, PRED_A))
    ] + [
        _sample(f'/d/B/origin/{t:08d}.jpg', g, p)
        for t, (g, p) in enumerate(zip(GT_B, PRED_B))
    ]
    order = np.random.RandomState(1).permutation(len(samples))
    for i in order:
        metric.process({}, [samples[i]])
    assert metric.compute_metrics(metric.results) == {
        'VC_3': round(100 * 5 / 6, 2)
    }
    metric = VideoConsistencyMetric(windows=(3, ), include_last_window=True)
    for s in samples:
        metric.process({}, [s])
    assert metric.compute_metrics(metric.results)['VC_3'] == round(
        100 * (2 / 3 + 1 + 2 / 3 + 0.5) / 4, 2)
    # the same frame twice is an error
    metric = VideoConsistencyMetric(windows=(3, ))
    metric.process({}, [samples[0], samples[0]])
    with pytest.raises(ValueError, match='more than once'):
        metric.compute_metrics(metric.results)


def test_bad_arguments():
    with pytest.raises(ValueError, match='windows'):
        VideoConsistencyMetric(windows=(1, ))
    with pytest.raises(ValueError, match='frame'):
        VideoConsistencyMetric(frame_pattern=r'\d+')
    with pytest.raises(ValueError, match='one size'):
        video_consistency_windows(
            [(np.zeros((2, 2)), np.zeros((2, 2))),
             (np.zeros((3, 2)), np.zeros((3, 2)))], (2, ))
