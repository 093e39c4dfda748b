"""Video consistency VC_n of the VSPW benchmark.

Definition (VSPW toolkit, ``VC_perclip.py``): for a window of ``n``
consecutive frames of a video, among the pixels whose ground-truth label is
the same in all ``n`` frames, the share whose predicted label is also the same
in all ``n`` frames. VC_n is the mean of that share over all windows of all
videos pooled together (windows where no pixel keeps its ground-truth label,
0/0, are left out of the mean, as the toolkit's ``np.nanmean``).

Which windows, as the toolkit: the windows start at frames ``0 .. L-n-1`` of
a video of ``L`` frames (``range(L - n)``), so the last full window (starting
at ``L-n``) is **not** used and a video of ``L <= n`` frames contributes
nothing; ``include_last_window=True`` adds that window. All ground-truth
pixels take part, the ignored ones (VSPW's 0 "others" and 255 void, both 255
after ``reduce_zero_label``) included, as the toolkit compares the label maps
as they are; ``exclude_ignored=True`` leaves out pixels whose ground truth is
``ignore_index``.

The computation runs once over the frames of a video keeping, per pixel, the
length of the run of frames over which the ground truth (and, separately,
ground truth and prediction together) stayed the same; a window ending at
frame ``e`` counts a pixel when that run is at least ``n`` long. This gives
exactly the toolkit's pairwise comparisons with the first frame of each
window.
"""
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ['video_consistency_windows', 'video_consistency']


def _check_windows(windows: Sequence[int]) -> Tuple[int, ...]:
    try:
        windows = tuple(int(n) for n in windows)
    except (TypeError, ValueError):
        raise TypeError(f'video consistency: windows must be ints, got '
                        f'{windows!r}') from None
    if not windows or min(windows) < 2:
        raise ValueError(f'video consistency: every window length must be '
                         f'>= 2, got {windows}')
    return windows


def video_consistency_windows(
        frames: Iterable[Tuple[np.ndarray, np.ndarray]],
        windows: Sequence[int] = (8, 16),
        include_last_window: bool = False,
        exclude_ignored: bool = False,
        ignore_index: int = 255,
        names: Optional[Sequence[str]] = None) -> Dict[int, List[float]]:
    """Per-window consistency of one video.

    Args:
        frames (Iterable[tuple[np.ndarray, np.ndarray]]): ``(gt, pred)`` label
            maps (H, W) of the video's frames in temporal order; all of one
            size. Consumed once (a generator is fine: only the run lengths
            are kept).
        windows (Sequence[int]): Window lengths ``n``. Defaults to (8, 16).
        include_last_window (bool): Also use the window that ends at the last
            frame (the toolkit leaves it out). Defaults to False.
        exclude_ignored (bool): Leave out pixels whose ground truth is
            ``ignore_index``. Defaults to False (the toolkit's way).
        ignore_index (int): See ``exclude_ignored``.
        names (Sequence[str], optional): Frame names for error messages.

    Returns:
        dict[int, list[float]]: For each ``n``, the share (in [0, 1], NaN
        when no pixel keeps its ground truth over the window) of each window
        in order of its first frame.
    """
    windows = _check_windows(windows)
    run_gt = run_both = None
    prev_gt = prev_pred = None
    per_end: Dict[int, List[float]] = {n: [] for n in windows}
    num = 0
    for index, (gt, pred) in enumerate(frames):
        gt = np.asarray(gt)
        pred = np.asarray(pred)
        name = names[index] if names is not None else f'frame {index}'
        if gt.ndim != 2 or gt.shape != pred.shape:
            raise ValueError(
                f'video consistency: {name}: ground truth {gt.shape} and '
                f'prediction {pred.shape} must be two maps (H, W) of one '
                'size')
        if run_gt is None:
            run_gt = np.ones(gt.shape, np.int32)
            run_both = np.ones(gt.shape, np.int32)
        else:
            if gt.shape != prev_gt.shape:
                raise ValueError(
                    f'video consistency: {name} has size {gt.shape}, the '
                    f'frame before it {prev_gt.shape}; the frames of a '
                    'video must have one size')
            same_gt = gt == prev_gt
            same_both = same_gt & (pred == prev_pred)
            run_gt = np.where(same_gt, run_gt + 1, 1)
            run_both = np.where(same_both, run_both + 1, 1)
        num += 1
        for n in windows:
            if num < n:
                continue
            stable = run_gt >= n
            if exclude_ignored:
                stable &= gt != ignore_index
            total = int(stable.sum())
            kept = int((stable & (run_both >= n)).sum())
            per_end[n].append(kept / total if total else float('nan'))
        prev_gt, prev_pred = gt, pred
    if not include_last_window:
        for n in windows:
            if per_end[n]:
                per_end[n].pop()
    return per_end


def video_consistency(
        window_scores: Iterable[Dict[int, List[float]]],
        windows: Sequence[int] = (8, 16)) -> Dict[int, Tuple[float, int]]:
    """VC_n over several videos: the mean over all their windows pooled.

    Args:
        window_scores (Iterable[dict[int, list[float]]]): Per video, the
            output of :func:`video_consistency_windows`.
        windows (Sequence[int]): The window lengths to report.

    Returns:
        dict[int, tuple[float, int]]: For each ``n``, ``(VC_n in [0, 1] or
        NaN when there is no window with a stable pixel, number of windows
        with a stable pixel)``.
    """
    windows = _check_windows(windows)
    pooled: Dict[int, List[float]] = {n: [] for n in windows}
    for scores in window_scores:
        for n in windows:
            pooled[n].extend(scores.get(n, []))
    out = {}
    for n in windows:
        values = np.asarray(pooled[n], dtype=np.float64)
        values = values[~np.isnan(values)]
        out[n] = (float(values.mean()) if values.size else float('nan'),
                  int(values.size))
    return out
