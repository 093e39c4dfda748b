"""Temporal consistency (ETC protocol) as an mmengine metric."""
import os.path as osp
from typing import Dict, List, Optional, Sequence, Union

import mmcv
import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger
from mmseg.registry import METRICS

from ...datasets.frame_names import FramePattern
from ..temporal_consistency import TemporalConsistency, miou_of


@METRICS.register_module()
class TemporalConsistencyMetric(BaseMetric):
    """Temporal consistency TC of consecutive predictions (ETC protocol).

    Each data sample is one frame: its ``pred_sem_seg`` and ``img_path`` (the
    image the optical flow is estimated on). Frames of one snippet are paired
    with the frame received just before them from the same snippet: the
    prediction of the later frame is warped onto the earlier one with the
    flow between the two images and the pair's confusion is accumulated
    (see :mod:`lma_mmseg.evaluation.temporal_consistency`). ``TC`` is the
    mIoU of the confusion summed over all pairs, in percent.

    The snippet of a frame is the metainfo ``tc_snippet`` when present, else
    its folder plus the file stem without the frame number; its order is
    ``tc_frame``, else the frame number (group ``frame`` of
    ``frame_pattern`` matched against the file stem). The frames of a
    snippet must arrive in order, one snippet after the other, in one
    process (as ``tools/analysis/temporal_consistency.py`` feeds them from a
    :class:`~lma_mmseg.apis.StreamingSegmenter`); anything else raises an
    error.

    Args:
        num_classes (int, optional): Defaults to the number of classes of
            ``dataset_meta``.
        flow (str | dict | callable): Flow estimator (``'dis'``,
            ``dict(type='RAFTFlow', weights=...)``, a callable). Defaults to
            ``'dis'``.
        ignore_index (int): Label left out. Defaults to 255.
        frame_pattern (str): See above. Defaults to the last run of digits
            before an optional ``_leftImg8bit``.
        collect_device (str): 'cpu' or 'gpu'. Defaults to 'cpu'.
        prefix (str, optional): Metric name prefix.
    """

    default_prefix: Optional[str] = None

    def __init__(self,
                 num_classes: Optional[int] = None,
                 flow: Union[str, dict] = 'dis',
                 ignore_index: int = 255,
                 frame_pattern: str = r'^.*?(?P<frame>\d+)(_leftImg8bit)?$',
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.num_classes = num_classes
        self.flow_cfg = flow
        self.ignore_index = ignore_index
        self.frame_names = FramePattern(frame_pattern,
                                        'TemporalConsistencyMetric')
        self._tc: Optional[TemporalConsistency] = None
        self.details: dict = {}
        self._last: Optional[dict] = None
        self._closed = set()

    def _accumulator(self) -> TemporalConsistency:
        if self._tc is None:
            num_classes = self.num_classes
            if num_classes is None:
                classes = (self.dataset_meta or {}).get('classes')
                if not classes:
                    raise ValueError(
                        'TemporalConsistencyMetric: give num_classes (no '
                        'dataset_meta with classes was set)')
                num_classes = len(classes)
            self._tc = TemporalConsistency(num_classes, self.flow_cfg,
                                           self.ignore_index)
        return self._tc

    def _snippet_and_frame(self, sample: dict):
        path = sample.get('img_path')
        snippet, frame = sample.get('tc_snippet'), sample.get('tc_frame')
        if snippet is None or frame is None:
            if not path:
                raise KeyError('TemporalConsistencyMetric: a frame needs '
                               'img_path (or tc_snippet and tc_frame)')
            video, number = self.frame_names.video_and_frame(path)
            if snippet is None:
                snippet = video
            if frame is None:
                frame = number
        return snippet, frame

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Pair each frame with the previous frame of its snippet."""
        tc = self._accumulator()
        for sample in data_samples:
            snippet, frame = self._snippet_and_frame(sample)
            pred = sample['pred_sem_seg']['data'].squeeze(0).cpu().numpy()
            path = sample.get('img_path')
            img = sample.get('tc_image')
            if img is None:
                if not path or not osp.isfile(path):
                    raise FileNotFoundError(
                        f'TemporalConsistencyMetric: image {path!r} of a '
                        'frame not found (the flow is estimated on it)')
                img = mmcv.imread(path, 'color')
            last = self._last
            if last is not None and last['snippet'] == snippet:
                if frame <= last['frame']:
                    raise ValueError(
                        f'TemporalConsistencyMetric: frame {frame} of '
                        f'snippet {snippet} arrived after frame '
                        f'{last["frame"]}; frames must come in order')
                conf, valid = tc.pair_confusion(last['img'], img,
                                                last['pred'], pred)
                entry = self.results[-1]
                entry['confusion'] += conf
                entry['pairs'] += 1
                entry['valid_pixels'] += valid
                entry['pixels'] += int(pred.size)
            else:
                if snippet in self._closed:
                    raise ValueError(
                        f'TemporalConsistencyMetric: snippet {snippet} '
                        'continues after frames of another snippet; feed '
                        'one snippet after the other')
                if last is not None:
                    self._closed.add(last['snippet'])
                self.results.append(
                    dict(
                        snippet=snippet,
                        confusion=np.zeros((tc.num_classes, ) * 2, np.int64),
                        pairs=0,
                        valid_pixels=0,
                        pixels=0))
            self._last = dict(
                snippet=snippet, frame=frame, img=img, pred=pred)

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """TC (percent) of the summed confusion, and the number of pairs."""
        flow = self._tc.flow if self._tc is not None else None
        self._last, self._closed, self._tc = None, set(), None
        logger = MMLogger.get_current_instance()
        if not results:
            raise ValueError('TemporalConsistencyMetric: no frame was given')
        conf = sum(r['confusion'] for r in results)
        pairs = int(sum(r['pairs'] for r in results))
        if pairs == 0:
            raise ValueError(
                'TemporalConsistencyMetric: no snippet had two frames, so '
                'there is no frame pair to compare')
        miou, iou = miou_of(conf)
        tc = round(miou * 100, 2) if not np.isnan(miou) else float('nan')
        pixels = sum(r['pixels'] for r in results)
        valid = sum(r['valid_pixels'] for r in results)
        #: Details of the last evaluation, for result files.
        self.details = dict(
            TC=None if np.isnan(miou) else tc,
            per_class_iou=[
                None if np.isnan(v) else round(float(v) * 100, 2)
                for v in iou
            ],
            pairs=pairs,
            snippets=len(results),
            valid_pixel_ratio=round(valid / pixels, 6) if pixels else None,
            flow=self._flow_description(flow))
        logger.info(f'TC: {tc} over {pairs} frame pairs of {len(results)} '
                    f'snippets ({100 * valid / max(pixels, 1):.1f} % of the '
                    'pixels flow to a point inside the next frame)')
        return dict(TC=tc, TC_pairs=pairs)

    def _flow_description(self, flow):
        describe = getattr(flow, 'describe', None)
        return describe() if callable(describe) else type(flow).__name__
