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


def _runs_by_shift(transform, wanted, make_results):
    """Run ``transform`` on fresh results with seeds 0, 1, ... until every
    shift in ``wanted`` was drawn; the outputs by shift ``(dx, dy)``."""
    found = {}
    for seed in range(2000):
        np.random.seed(seed)
        out = transform(make_results())
        if out['translate'] in wanted:
            found.setdefault(out['translate'], out)
        if len(found) == len(set(wanted)):
            return found
    raise AssertionError(f'shifts {set(wanted) - set(found)} never drawn')


# The label 1..30 on 5 x 6 pixels after the authors' translation
# (datasets/transform.py: PIL ImageOps.expand by (dx, dy) on the left / top
# with fill 255, then a crop back to 6 x 5 that reaches past the image for
# negative shifts, where PIL fills 0), by shift (dx, dy).
AUTHORS_LABELS = {
    (2, 0): [[255, 255, 1, 2, 3, 4], [255, 255, 7, 8, 9, 10],
             [255, 255, 13, 14, 15, 16], [255, 255, 19, 20, 21, 22],
             [255, 255, 25, 26, 27, 28]],
    (-2, 0): [[3, 4, 5, 6, 0, 0], [9, 10, 11, 12, 0, 0],
              [15, 16, 17, 18, 0, 0], [21, 22, 23, 24, 0, 0],
              [27, 28, 29, 30, 0, 0]],
    (0, 1): [[255] * 6, [1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12],
             [13, 14, 15, 16, 17, 18], [19, 20, 21, 22, 23, 24]],
    (0, -1): [[7, 8, 9, 10, 11, 12], [13, 14, 15, 16, 17, 18],
              [19, 20, 21, 22, 23, 24], [25, 26, 27, 28, 29, 30], [0] * 6],
    (-2, 1): [[255, 255, 255, 255, 0, 0], [3, 4, 5, 6, 0, 0],
              [9, 10, 11, 12, 0, 0], [15, 16, 17, 18, 0, 0],
              [21, 22, 23, 24, 0, 0]],
    (2, -1): [[255, 255, 7, 8, 9, 10], [255, 255, 13, 14, 15, 16],
              [255, 255, 19, 20, 21, 22], [255, 255, 25, 26, 27, 28],
              [0] * 6],
}


def test_translate_label_fill_per_direction_as_the_authors():
    """seg_fill=255, seg_fill_negative=0: the left columns / top rows that a
    positive shift uncovers are ignored (255), the right columns / bottom
    rows that a negative shift uncovers are labelled 0 (road), corners
    included; the image gets img_fill either way."""
    t = TRANSFORMS.build(
        dict(type='RandomTranslate', max_shift=2, img_fill=0, seg_fill=255,
             seg_fill_negative=0))
    label = np.arange(1, 31, dtype=np.uint8).reshape(5, 6)

    def make():
        res = _results(h=5, w=6)
        res['gt_seg_map'] = label.copy()
        return res

    runs = _runs_by_shift(t, AUTHORS_LABELS, make)
    for shift, expected in AUTHORS_LABELS.items():
        out = runs[shift]
        np.testing.assert_array_equal(
            out['gt_seg_map'], np.array(expected, np.uint8), err_msg=shift)
        assert out['gt_seg_map'].dtype == np.uint8


def test_translate_label_fill_every_shift():
    """All 25 shifts of max_shift=2: uncovered label pixels are 0 exactly
    where a negative shift uncovered them, else 255; the image's are 0."""
    t = TRANSFORMS.build(
        dict(type='RandomTranslate', max_shift=2, seg_fill=255,
             seg_fill_negative=0))
    shifts = [(dx, dy) for dx in range(-2, 3) for dy in range(-2, 3)]
    h, w = 6, 8

    def make():
        return _results(h=h, w=w)

    ref = make()
    img, seg = ref['img'], ref['gt_seg_map']
    for (dx, dy), out in _runs_by_shift(t, shifts, make).items():
        covered = _shifted(np.ones((h, w), bool), dx, dy, False)
        y, x = np.mgrid[:h, :w]
        negative = ((dx < 0) & (x >= w + dx)) | ((dy < 0) & (y >= h + dy))
        assert not (covered & negative).any()
        expected = _shifted(seg, dx, dy, 255)
        expected[negative] = 0
        np.testing.assert_array_equal(out['gt_seg_map'], expected,
                                      err_msg=str((dx, dy)))
        np.testing.assert_array_equal(out['img'], _shifted(img, dx, dy, 0))
        assert (out['gt_seg_map'][~covered & ~negative] == 255).all()


def test_translate_default_fill_is_the_same_in_every_direction():
    t = TRANSFORMS.build(dict(type='RandomTranslate', max_shift=2))
    assert t.seg_fill == 255 and t.seg_fill_negative is None
    runs = _runs_by_shift(t, [(-2, -2), (2, 2)], _results)
    for out in runs.values():
        seg = out['gt_seg_map']
        assert (seg[:2] == 255).all() or (seg[-2:] == 255).all()
        assert (seg[:, :2] == 255).all() or (seg[:, -2:] == 255).all()
    assert 'seg_fill_negative=None' in repr(t)


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
    with pytest.raises(TypeError, match='seg_fill_negative'):
        TRANSFORMS.build(
            dict(type='RandomTranslate', seg_fill_negative='road'))
    with pytest.raises(TypeError, match='seg_fill'):
        TRANSFORMS.build(dict(type='RandomTranslate', seg_fill=None))


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
