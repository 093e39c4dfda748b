"""Temporal consistency (ETC protocol): flow warping and accumulation."""
import cv2
import numpy as np
import pytest
import torch

from lma_mmseg.evaluation.metrics import TemporalConsistencyMetric
from lma_mmseg.evaluation.temporal_consistency import (DISFlow, FlowEstimator,
                                                       TemporalConsistency,
                                                       build_flow_estimator,
                                                       miou_of, tc_confusion,
                                                       warp_nearest)


class ConstantFlow(FlowEstimator):
    """A known flow: every pixel moves by (dx, dy)."""

    def __init__(self, dx, dy=0.0):
        self.dx, self.dy = dx, dy

    def __call__(self, img_t, img_t1):
        flow = np.zeros(img_t.shape[:2] + (2, ), np.float32)
        flow[..., 0] = self.dx
        flow[..., 1] = self.dy
        return flow


def _texture(h, w, seed=0):
    rng = np.random.RandomState(seed)
    coarse = rng.randint(0, 256, (h // 8, w // 8, 3)).astype(np.uint8)
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(img, (5, 5), 1.0)


# One row of 8 pixels. Frame t+1 shows the scene moved 2 px to the right,
# with new content (class 2) entering on the left.
P_T = np.array([[0, 0, 0, 0, 1, 1, 1, 1]])
P_T1 = np.array([[2, 2, 0, 0, 0, 0, 1, 1]])
IMG = np.zeros((1, 8, 3), np.uint8)


def test_known_shift_with_the_true_flow_is_fully_consistent():
    tc = TemporalConsistency(3, flow=ConstantFlow(2.0))
    conf = tc.add_pair(IMG, IMG, P_T, P_T1)
    # pixels 6 and 7 flow to x = 8, 9: outside, left out
    np.testing.assert_array_equal(conf, [[4, 0, 0], [0, 2, 0], [0, 0, 0]])
    res = tc.result()
    assert res['TC'] == 100.0 and res['pairs'] == 1
    assert res['valid_pixel_ratio'] == 0.75
    # 1.5 rounds half up to 2: the same
    conf, valid = tc_confusion(P_T, P_T1,
                               ConstantFlow(1.5)(IMG, IMG), 3)
    assert valid == 6 and conf.trace() == 6


def test_known_shift_with_a_wrong_flow_gives_the_hand_computed_value():
    # dx = 1 (1.49 rounds to 1): pixel x of t is compared with x+1 of t+1,
    # x = 0..6: (0,2) (0,0) (0,0) (0,0) (1,0) (1,1) (1,1)
    # IoU_0 = 3 / (4 + 4 - 3) = 3/5, IoU_1 = 2 / (3 + 2 - 2) = 2/3,
    # IoU_2 = 0 / (0 + 1 - 0) = 0  ->  TC = (3/5 + 2/3 + 0) / 3
    for dx in (1.0, 1.49):
        tc = TemporalConsistency(3, flow=ConstantFlow(dx))
        conf = tc.add_pair(IMG, IMG, P_T, P_T1)
        np.testing.assert_array_equal(conf, [[3, 0, 1], [1, 2, 0], [0, 0, 0]])
        assert tc.result()['TC'] == round(100 * (3 / 5 + 2 / 3) / 3, 2)
        assert tc.result()['per_class_iou'] == [60.0, 66.67, 0.0]


def test_pairs_accumulate_into_one_confusion():
    tc = TemporalConsistency(3, flow=ConstantFlow(1.0))
    tc.add_pair(IMG, IMG, P_T, P_T1)
    tc.add_pair(IMG, IMG, P_T, P_T)  # x vs x+1 of the same map
    # second pair, x = 0..6: (0,0)x3 (0,1) (1,1)x3
    expected = np.array([[6, 1, 1], [1, 5, 0], [0, 0, 0]])
    np.testing.assert_array_equal(tc.confusion, expected)
    assert tc.result()['TC'] == round(100 * miou_of(expected)[0], 2)
    # IoU of the summed matrix, not the mean of the pairs' IoUs
    assert tc.result()['pairs'] == 2


def test_vertical_flow_and_border():
    pred = np.arange(12).reshape(3, 4) % 5
    flow = np.zeros((3, 4, 2), np.float32)
    flow[..., 1] = -1  # pixel (y, x) of t is at (y-1, x) in t+1
    warped, valid = warp_nearest(pred, flow)
    assert not valid[0].any() and valid[1:].all()
    np.testing.assert_array_equal(warped[1:], pred[:-1])


def test_static_video_with_identical_predictions_gives_100():
    img = _texture(64, 96)
    rng = np.random.RandomState(0)
    pred = rng.randint(0, 5, (64, 96))
    tc = TemporalConsistency(5, flow='dis')
    for _ in range(3):
        tc.add_pair(img, img.copy(), pred, pred.copy())
    res = tc.result()
    assert res['TC'] == 100.0 and res['valid_pixel_ratio'] == 1.0


def test_dis_flow_direction_on_a_known_shift():
    """DIS on a textured image moved 3 px right: the labels that move with
    the image are found consistent (the flow has the documented sign)."""
    big = _texture(64, 128, seed=3)
    img_t, img_t1 = big[:, 8:104], big[:, 5:101]  # content moves +3 px
    labels = (cv2.cvtColor(big, cv2.COLOR_BGR2GRAY) > 120).astype(np.int64)
    pred_t, pred_t1 = labels[:, 8:104], labels[:, 5:101]
    flow = DISFlow('medium')(img_t, img_t1)
    assert np.median(flow[..., 0]) == pytest.approx(3.0, abs=0.25)
    assert np.median(np.abs(flow[..., 1])) < 0.25
    tc = TemporalConsistency(2, flow='dis')
    tc.add_pair(img_t, img_t1, pred_t, pred_t1)
    assert tc.result()['TC'] > 95
    # the opposite sign would compare pixels 6 px apart
    wrong = TemporalConsistency(2, flow=ConstantFlow(-3.0))
    wrong.add_pair(img_t, img_t1, pred_t, pred_t1)
    assert wrong.result()['TC'] < tc.result()['TC'] - 10


def _frame(path, pred, snippet=None, frame=None):
    sample = dict(img_path=path, pred_sem_seg=dict(
        data=torch.as_tensor(pred)[None]), tc_image=IMG)
    if snippet is not None:
        sample.update(tc_snippet=snippet, tc_frame=frame)
    return sample


def test_metric_pairs_frames_of_a_snippet():
    metric = TemporalConsistencyMetric(num_classes=3, flow=ConstantFlow(1))
    metric.process({}, [
        _frame('/v/a_000001_000017.png', P_T),
        _frame('/v/a_000001_000018.png', P_T1),
        _frame('/v/a_000002_000018.png', P_T),
        _frame('/v/a_000002_000019.png', P_T),
    ])
    assert len(metric.results) == 2
    out = metric.compute_metrics(metric.results)
    expected = np.array([[6, 1, 1], [1, 5, 0], [0, 0, 0]])
    assert out == dict(TC=round(100 * miou_of(expected)[0], 2), TC_pairs=2)
    assert metric.details['snippets'] == 2

    metric = TemporalConsistencyMetric(num_classes=3, flow=ConstantFlow(1))
    with pytest.raises(ValueError, match='in order'):
        metric.process({}, [
            _frame('x', P_T, 's', 2), _frame('x', P_T, 's', 1)])
    metric = TemporalConsistencyMetric(num_classes=3, flow=ConstantFlow(1))
    with pytest.raises(ValueError, match='one snippet after the other'):
        metric.process({}, [
            _frame('x', P_T, 'a', 0), _frame('x', P_T, 'b', 0),
            _frame('x', P_T, 'a', 1)])
    metric = TemporalConsistencyMetric(num_classes=3, flow=ConstantFlow(1))
    metric.process({}, [_frame('x', P_T, 'a', 0)])
    with pytest.raises(ValueError, match='no frame pair'):
        metric.compute_metrics(metric.results)


def test_flow_estimators_and_errors():
    assert isinstance(build_flow_estimator('dis'), DISFlow)
    assert build_flow_estimator(dict(type='dis', preset='fast')).preset == \
        'fast'
    with pytest.raises(KeyError, match='unknown flow estimator'):
        build_flow_estimator('farneback')
    with pytest.raises(ValueError, match='preset'):
        DISFlow('slow')
    with pytest.raises(ValueError, match='differ in size'):
        DISFlow()(_texture(16, 16), _texture(16, 24))
    with pytest.raises(ValueError, match='outside'):
        tc_confusion(P_T, P_T1 + 5, ConstantFlow(0)(IMG, IMG), 3)


def test_raft_needs_torchvision_and_a_weights_file(tmp_path):
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match='torchvision'):
            build_flow_estimator(dict(type='raft', weights='w.pth'))
    else:
        with pytest.raises(FileNotFoundError, match='missing.pth'):
            build_flow_estimator(
                dict(type='raft', weights=str(tmp_path / 'missing.pth')))
