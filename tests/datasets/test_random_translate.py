"""RandomTranslate (the authors' +-2 px clip translation) and ResetOriShape
(evaluation at the working resolution)."""
import numpy as np
import pytest
from mmseg.registry import TRANSFORMS

import lma_mmseg  # noqa: F401


def _results(h=6, w=8, frames=3, seed=0):
    rng = np.random.default_rng(seed)
    imgs = [rng.integers(1, 256, (h, w, 3), np.uint8) for _ in range(frames)]
    seg = rng.integers(0, 19, (h, w), np.uint8)
    return dict(imgs=imgs, img=imgs[-1], gt_seg_map=seg,
                seg_fields=['gt_seg_map'], img_shape=(h, w),
                ori_shape=(h, w), img_path='key.png')


def _shifted(arr, dx, dy, fill):
    """Reference: out[y, x] = arr[y - dy, x - dx] inside the image."""
    out = np.full_like(arr, fill)
    h, w = arr.shape[:2]
    for y in range(h):
        for x in range(w):
            if 0 <= y - dy < h and 0 <= x - dx < w:
                out[y, x] = arr[y - dy, x - dx]
    return out


def test_translate_moves_image_and_label_with_their_fills():
    t = TRANSFORMS.build(dict(type='RandomTranslate', max_shift=2))
    seen = set()
    for seed in range(60):
        np.random.seed(seed)
        res = _results()
        img, seg = res['img'].copy(), res['gt_seg_map'].copy()
        out = t(res)
        dx, dy = out['translate']
        assert -2 <= dx <= 2 and -2 <= dy <= 2
        seen.add((dx, dy))
        np.testing.assert_array_equal(out['img'], _shifted(img, dx, dy, 0))
        np.testing.assert_array_equal(out['gt_seg_map'],
                                      _shifted(seg, dx, dy, 255))
        assert out['img'].shape == img.shape
    assert len({d[0] for d in seen}) == 5 and len({d[1] for d in seen}) == 5


def test_translate_is_the_same_for_every_frame_of_a_clip():
    t = TRANSFORMS.build(
        dict(type='ClipTransformBroadcaster', transforms=[
            dict(type='RandomFlip', prob=0.5),
            dict(type='RandomTranslate', max_shift=2),
        ]))
    for seed in range(10):
        np.random.seed(seed)
        res = _results(frames=4, seed=seed)
        # identical frames must stay identical after the transforms
        res['imgs'] = [res['imgs'][0].copy() for _ in range(4)]
        res['img'] = res['imgs'][-1]
        out = t(res)
        for img in out['imgs'][:-1]:
            np.testing.assert_array_equal(img, out['imgs'][-1])
        assert out['img'] is out['imgs'][-1]


def test_translate_zero_shift_and_bad_arguments():
    t = TRANSFORMS.build(dict(type='RandomTranslate', max_shift=0))
    res = _results()
    img = res['img'].copy()
    np.testing.assert_array_equal(t(res)['img'], img)
    with pytest.raises(ValueError, match='max_shift'):
        TRANSFORMS.build(dict(type='RandomTranslate', max_shift=-1))
    with pytest.raises(ValueError, match='prob'):
        TRANSFORMS.build(dict(type='RandomTranslate', prob=2.0))


def test_reset_ori_shape_keeps_predictions_at_the_working_size():
    pipeline = [
        TRANSFORMS.build(
            dict(type='Resize', scale=(4, 3), keep_ratio=False,
                 backend='pillow')),
        TRANSFORMS.build(dict(type='ResetOriShape')),
    ]
    res = _results()
    for t in pipeline:
        res = t(res)
    assert res['ori_shape'] == (3, 4) and res['gt_seg_map'].shape == (3, 4)
    bad = _results()
    bad['img_shape'] = (3, 4)
    with pytest.raises(ValueError, match='gt_seg_map'):
        TRANSFORMS.build(dict(type='ResetOriShape'))(bad)
