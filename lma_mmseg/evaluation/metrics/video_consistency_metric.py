"""Video consistency VC_n (VSPW) as an mmengine metric."""
import zlib
from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger
from mmseg.registry import METRICS

from ...datasets.frame_names import FramePattern
from ..video_consistency import video_consistency, video_consistency_windows


def _pack(array: np.ndarray) -> tuple:
    array = np.ascontiguousarray(array)
    return (array.shape, array.dtype.str, zlib.compress(array.tobytes(), 1))


def _unpack(packed: tuple) -> np.ndarray:
    shape, dtype, data = packed
    return np.frombuffer(zlib.decompress(data), dtype=dtype).reshape(shape)


@METRICS.register_module()
class VideoConsistencyMetric(BaseMetric):
    """Video consistency VC_n of the VSPW benchmark (``VC_perclip.py``).

    For every window of ``n`` consecutive evaluated frames of a video: among
    the pixels whose ground truth is the same in all ``n`` frames, the share
    whose prediction is the same in all ``n`` too; ``VC_n`` is the mean over
    all windows of all videos pooled, in percent. The windows are those of
    the toolkit (the last full window of a video is left out; videos of at
    most ``n`` frames give none) unless ``include_last_window``; see
    :mod:`lma_mmseg.evaluation.video_consistency` for the details.

    Frames are grouped into videos and ordered by ``img_path``: the video is
    the folder plus the part of the file stem before the frame number, the
    frame number is the ``frame`` group of ``frame_pattern`` matched against
    the file stem. Consecutive means consecutive among the evaluated frames
    (VSPW: every frame with stride 1, as the toolkit). The frames may arrive
    in any order and from several processes: each one's ground truth and
    prediction are kept zlib-compressed until :meth:`compute_metrics`.

    Use beside mmseg's ``IoUMetric`` for mIoU::

        test_evaluator = [
            dict(type='IoUMetric', iou_metrics=['mIoU']),
            dict(type='VideoConsistencyMetric', windows=(8, 16))]

    Args:
        windows (Sequence[int]): Window lengths ``n``. Defaults to (8, 16).
        include_last_window (bool): Also use the window ending at a video's
            last frame. Defaults to False (the toolkit's windows).
        exclude_ignored (bool): Leave out pixels whose ground truth is
            ``ignore_index``. Defaults to False (the toolkit counts every
            pixel).
        ignore_index (int): Defaults to 255.
        frame_pattern (str): Regular expression with a named group ``frame``
            matched against the file stem of ``img_path``. Defaults to the
            last run of digits.
        collect_device (str): 'cpu' or 'gpu'. Defaults to 'cpu'.
        prefix (str, optional): Metric name prefix.
    """

    default_prefix: Optional[str] = None

    def __init__(self,
                 windows: Sequence[int] = (8, 16),
                 include_last_window: bool = False,
                 exclude_ignored: bool = False,
                 ignore_index: int = 255,
                 frame_pattern: str = r'^.*?(?P<frame>\d+)$',
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.windows = tuple(int(n) for n in windows)
        if not self.windows or min(self.windows) < 2:
            raise ValueError(f'VideoConsistencyMetric: windows must be '
                             f'lengths >= 2, got {windows!r}')
        self.include_last_window = bool(include_last_window)
        self.exclude_ignored = bool(exclude_ignored)
        self.ignore_index = ignore_index
        self.frame_names = FramePattern(frame_pattern,
                                        'VideoConsistencyMetric')

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Keep each frame's ground truth and prediction (compressed)."""
        for sample in data_samples:
            if 'gt_sem_seg' not in sample:
                raise KeyError(
                    f'VideoConsistencyMetric: {sample.get("img_path")} has '
                    'no ground truth (gt_sem_seg); VC needs labelled frames')
            pred = sample['pred_sem_seg']['data'].cpu().numpy()
            gt = sample['gt_sem_seg']['data'].cpu().numpy()
            if pred.ndim == 3 and gt.ndim == 3:  # (1, H, W)
                pred, gt = pred[0], gt[0]
            dtype = np.uint8 if max(int(pred.max(initial=0)),
                                    int(gt.max(initial=0))) < 256 else \
                np.int32
            video, frame = self.frame_names.video_and_frame(
                sample['img_path'])
            self.results.append(
                dict(
                    video=video,
                    frame=frame,
                    img_path=sample['img_path'],
                    gt=_pack(gt.astype(dtype)),
                    pred=_pack(pred.astype(dtype))))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """VC_n in percent, plus the number of windows used."""
        logger = MMLogger.get_current_instance()
        videos = defaultdict(list)
        for item in results:
            videos[item['video']].append(item)
        scores = []
        for video in sorted(videos):
            items = sorted(videos[video], key=lambda r: r['frame'])
            frames = [r['frame'] for r in items]
            dup = sorted({f for f in frames if frames.count(f) > 1})
            if dup:
                raise ValueError(
                    f'VideoConsistencyMetric: frames {dup} of video {video} '
                    'were evaluated more than once')
            scores.append(
                video_consistency_windows(
                    ((_unpack(r['gt']), _unpack(r['pred'])) for r in items),
                    self.windows,
                    include_last_window=self.include_last_window,
                    exclude_ignored=self.exclude_ignored,
                    ignore_index=self.ignore_index,
                    names=[r['img_path'] for r in items]))
        vc = video_consistency(scores, self.windows)
        metrics = {}
        for n in self.windows:
            value, count = vc[n]
            metrics[f'VC_{n}'] = round(value * 100, 2) \
                if not np.isnan(value) else float('nan')
            logger.info(f'VC_{n}: {metrics[f"VC_{n}"]} over {count} windows '
                        f'of {len(videos)} videos')
        return metrics
