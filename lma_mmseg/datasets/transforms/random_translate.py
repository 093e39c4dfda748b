# Copyright (c) lma_mmseg contributors. All rights reserved.
from typing import Optional

import numpy as np
from mmcv.transforms import BaseTransform
from mmcv.transforms.utils import cache_randomness
from mmseg.registry import TRANSFORMS


def _shift(arr: np.ndarray,
           dx: int,
           dy: int,
           fill,
           fill_negative=None) -> np.ndarray:
    """``arr`` (H, W[, C]) moved by ``dx`` columns and ``dy`` rows
    (positive: right / down); uncovered pixels get ``fill``, or
    ``fill_negative`` (when given) where a negative shift uncovered them:
    the right columns for ``dx < 0``, the bottom rows for ``dy < 0``,
    corners included."""
    h, w = arr.shape[:2]
    out = np.full_like(arr, fill)
    if fill_negative is not None:
        if dx < 0:
            out[:, max(w + dx, 0):] = fill_negative
        if dy < 0:
            out[max(h + dy, 0):] = fill_negative
    if abs(dx) >= w or abs(dy) >= h:
        return out
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        arr[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


@TRANSFORMS.register_module()
class RandomTranslate(BaseTransform):
    """Shift the image and its segmentation maps by a random whole number of
    pixels, keeping their size.

    The horizontal and vertical shifts are drawn independently and uniformly
    from ``{-max_shift, ..., max_shift}`` (numpy's generator, so
    :class:`ClipTransformBroadcaster` replays the same draw for every frame
    of a clip); the content moves right / down for positive shifts, the
    pixels it uncovers get ``img_fill`` (image) and ``seg_fill`` (the maps in
    ``seg_fields``, e.g. the ignore index). This is the translation of the
    Local Memory Attention authors' training augmentation (up to 2 px).

    ``seg_fill_negative`` gives the maps another value where a negative
    shift uncovered them (content moved left / up: the right columns and
    the bottom rows; where such a strip meets a strip of a positive shift,
    the corner takes ``seg_fill_negative``). The authors' translation
    (mattpfr/lmanet ``datasets/transform.py``: PIL ``ImageOps.expand`` by
    the shift on the left / top, then a crop back to the image size) fills
    the image with 0 either way and the label with 255 (ignored) for
    positive shifts but with 0 (the class ``road``) for negative ones, where
    the crop reaches past the image: ``img_fill=0, seg_fill=255,
    seg_fill_negative=0``. That labels a 1-2 px border as
    road, so the default keeps one fill (``seg_fill``) for every direction.

    Required Keys: ``img``; optional ``seg_fields`` and the maps they name.

    Modified Keys: ``img`` and the maps in ``seg_fields``.

    Added Keys: ``translate`` (tuple[int, int]): the shift ``(dx, dy)``.

    Args:
        max_shift (int): Largest shift in pixels along each axis (>= 0).
            Defaults to 2.
        prob (float): Probability of translating at all. Defaults to 1.0.
        img_fill (int | float): Value of the uncovered image pixels.
            Defaults to 0.
        seg_fill (int): Value of the uncovered label pixels. Defaults to
            255.
        seg_fill_negative (int, optional): Value of the label pixels
            uncovered by a negative shift (right columns, bottom rows);
            None gives them ``seg_fill``. Defaults to None.
    """

    def __init__(self,
                 max_shift: int = 2,
                 prob: float = 1.0,
                 img_fill=0,
                 seg_fill: int = 255,
                 seg_fill_negative: Optional[int] = None) -> None:
        name = type(self).__name__
        if not isinstance(max_shift, int) or isinstance(max_shift, bool) \
                or max_shift < 0:
            raise ValueError(f'{name}: `max_shift` must be an int >= 0, got '
                             f'{max_shift!r}')
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f'{name}: `prob` must be in [0, 1], got '
                             f'{prob!r}')
        fills = [('seg_fill', seg_fill)]
        if seg_fill_negative is not None:
            fills.append(('seg_fill_negative', seg_fill_negative))
        for arg, value in fills:
            if isinstance(value, bool) or not isinstance(
                    value, (int, np.integer)):
                raise TypeError(f'{name}: `{arg}` must be an int (a label '
                                f'value), got {value!r}')
        self.max_shift = max_shift
        self.prob = prob
        self.img_fill = img_fill
        self.seg_fill = seg_fill
        self.seg_fill_negative = seg_fill_negative

    @cache_randomness
    def _draw(self) -> tuple:
        if self.prob < 1.0 and np.random.rand() >= self.prob:
            return 0, 0
        dx, dy = np.random.randint(-self.max_shift, self.max_shift + 1, 2)
        return int(dx), int(dy)

    def transform(self, results: dict) -> dict:
        dx, dy = self._draw()
        results['img'] = _shift(results['img'], dx, dy, self.img_fill)
        for key in results.get('seg_fields', []):
            results[key] = _shift(results[key], dx, dy, self.seg_fill,
                                  self.seg_fill_negative)
        results['translate'] = (dx, dy)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(max_shift={self.max_shift}, '
                f'prob={self.prob}, img_fill={self.img_fill}, '
                f'seg_fill={self.seg_fill}, '
                f'seg_fill_negative={self.seg_fill_negative})')
