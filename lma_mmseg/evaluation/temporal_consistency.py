"""Temporal consistency (TC) of video predictions, as in the ETC protocol.

Liu et al., "Efficient Semantic Video Segmentation with Per-frame Inference"
(ECCV 2020): for consecutive frames ``t`` and ``t+1``, the optical flow from
frame ``t`` to frame ``t+1`` is estimated on the images; the prediction of
``t+1`` is warped back onto frame ``t`` (nearest neighbour) and compared with
the prediction of ``t``. The pairs ``(P_t, warped P_{t+1})`` of all frame
pairs are accumulated into one confusion matrix; TC is the mean IoU of that
matrix (in percent). Pixels of frame ``t`` whose flow leads outside frame
``t+1`` (content that enters the view) are left out.

Flow convention: ``flow[y, x] = (dx, dy)`` such that ``img_t[y, x]`` shows
the same point as ``img_{t+1}[y + dy, x + dx]``. The warped prediction is
``P_{t+1}[round(y + dy), round(x + dx)]`` with halves rounded up
(``floor(v + 0.5)``).

Flow estimators (see :func:`build_flow_estimator`):

* ``DISFlow`` (default): OpenCV's DIS optical flow on grey images, nothing to
  download;
* ``RAFTFlow``: torchvision's RAFT with a local weights file;
* any callable ``flow = f(img_t, img_t1)`` returning (H, W, 2) float.
"""
from typing import Callable, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from mmengine.registry import Registry

__all__ = [
    'TC_KIND', 'FLOW_ESTIMATORS', 'FlowEstimator', 'DISFlow', 'RAFTFlow',
    'build_flow_estimator', 'warp_nearest', 'tc_confusion', 'miou_of',
    'TemporalConsistency', 'default_offsets', 'evaluate_temporal_consistency'
]

#: ``kind`` of the result files of ``tools/analysis/temporal_consistency.py``
#: (the leaderboard's ``TC_KIND``).
TC_KIND = 'lma_mmseg.temporal_consistency'

#: Registry of optical flow estimators (``dict(type='DISFlow', ...)``).
FLOW_ESTIMATORS = Registry('flow estimator')

#: Short names accepted by :func:`build_flow_estimator`.
FLOW_ALIASES = {'dis': 'DISFlow', 'raft': 'RAFTFlow'}


class FlowEstimator:
    """Interface of an optical flow estimator.

    ``flow = estimator(img_t, img_t1)``: ``img_t`` and ``img_t1`` are
    (H, W, 3) uint8 BGR images of one size; ``flow`` is (H, W, 2) float32,
    ``(dx, dy)`` from ``img_t`` to ``img_t1`` (see the module doc).
    """

    name = 'flow'

    def __call__(self, img_t: np.ndarray, img_t1: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict:
        """What to record in a result file."""
        return dict(type=type(self).__name__)


def _check_pair(img_t: np.ndarray, img_t1: np.ndarray, who: str) -> None:
    for name, img in (('img_t', img_t), ('img_t1', img_t1)):
        if not isinstance(img, np.ndarray) or img.ndim != 3 or \
                img.shape[2] != 3:
            raise ValueError(f'{who}: {name} must be an (H, W, 3) BGR array, '
                             f'got {getattr(img, "shape", type(img))}')
    if img_t.shape != img_t1.shape:
        raise ValueError(f'{who}: the two images differ in size: '
                         f'{img_t.shape} and {img_t1.shape}')


@FLOW_ESTIMATORS.register_module()
class DISFlow(FlowEstimator):
    """OpenCV's DIS optical flow (``cv2.DISOpticalFlow_create``).

    Args:
        preset (str): ``'ultrafast'``, ``'fast'`` or ``'medium'``. Defaults
            to ``'medium'``.
    """

    PRESETS = {
        'ultrafast': cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
        'fast': cv2.DISOPTICAL_FLOW_PRESET_FAST,
        'medium': cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
    }

    def __init__(self, preset: str = 'medium'):
        if preset not in self.PRESETS:
            raise ValueError(f'DISFlow: preset must be one of '
                             f'{sorted(self.PRESETS)}, got {preset!r}')
        self.preset = preset
        self.dis = cv2.DISOpticalFlow_create(self.PRESETS[preset])

    def __call__(self, img_t: np.ndarray, img_t1: np.ndarray) -> np.ndarray:
        _check_pair(img_t, img_t1, 'DISFlow')
        a = cv2.cvtColor(img_t, cv2.COLOR_BGR2GRAY)
        b = cv2.cvtColor(img_t1, cv2.COLOR_BGR2GRAY)
        return self.dis.calc(a, b, None).astype(np.float32)

    def describe(self) -> dict:
        return dict(type='DISFlow', preset=self.preset)


@FLOW_ESTIMATORS.register_module()
class RAFTFlow(FlowEstimator):
    """torchvision's RAFT with weights from a local file.

    Args:
        weights (str): A local file with the state dict of torchvision's
            ``raft_large`` / ``raft_small`` (e.g. torchvision's
            ``raft_large_C_T_SKHT_V2-ff5fadd5.pth``).
        arch (str): ``'raft_large'`` or ``'raft_small'``. Defaults to
            ``'raft_large'``.
        num_flow_updates (int): RAFT refinement iterations. Defaults to 12.
        device (str): Torch device. Defaults to ``'cpu'``.

    Raises:
        ImportError: torchvision is not installed.
        FileNotFoundError: ``weights`` is not a file.
    """

    def __init__(self,
                 weights: str,
                 arch: str = 'raft_large',
                 num_flow_updates: int = 12,
                 device: str = 'cpu'):
        import os.path as osp
        try:
            from torchvision.models import optical_flow
        except ImportError as exc:
            raise ImportError(
                'RAFTFlow needs torchvision (pip install torchvision matching '
                'your torch); the default DIS flow (OpenCV) needs nothing '
                f'more ({exc})') from exc
        import torch
        if arch not in ('raft_large', 'raft_small'):
            raise ValueError(f"RAFTFlow: arch must be 'raft_large' or "
                             f"'raft_small', got {arch!r}")
        if not weights or not osp.isfile(weights):
            raise FileNotFoundError(
                f'RAFTFlow: weights file {weights!r} not found; give a local '
                f'state dict of torchvision {arch}')
        model = getattr(optical_flow, arch)(weights=None, progress=False)
        state = torch.load(weights, map_location='cpu', weights_only=True)
        if isinstance(state, dict) and 'state_dict' in state:
            state = state['state_dict']
        model.load_state_dict(state)
        self.torch = torch
        self.model = model.to(device).eval()
        self.device = device
        self.arch = arch
        self.weights = weights
        self.num_flow_updates = int(num_flow_updates)

    def _tensor(self, img: np.ndarray):
        rgb = np.ascontiguousarray(img[..., ::-1])
        t = self.torch.from_numpy(rgb).permute(2, 0, 1).float()
        return (t / 127.5 - 1.0)[None].to(self.device)

    def __call__(self, img_t: np.ndarray, img_t1: np.ndarray) -> np.ndarray:
        _check_pair(img_t, img_t1, 'RAFTFlow')
        torch = self.torch
        h, w = img_t.shape[:2]
        ph, pw = (-h) % 8, (-w) % 8
        a, b = self._tensor(img_t), self._tensor(img_t1)
        if ph or pw:
            pad = torch.nn.functional.pad
            a = pad(a, (0, pw, 0, ph), mode='replicate')
            b = pad(b, (0, pw, 0, ph), mode='replicate')
        with torch.no_grad():
            flows = self.model(a, b, num_flow_updates=self.num_flow_updates)
        flow = flows[-1][0, :, :h, :w].permute(1, 2, 0)
        return flow.cpu().numpy().astype(np.float32)

    def describe(self) -> dict:
        return dict(
            type='RAFTFlow',
            arch=self.arch,
            weights=self.weights,
            num_flow_updates=self.num_flow_updates)


def build_flow_estimator(
        cfg: Union[str, dict, Callable, None] = 'dis') -> Callable:
    """A flow estimator from a name, a config dict or a callable.

    Args:
        cfg (str | dict | callable | None): ``'dis'`` / ``'raft'`` (RAFT
            needs ``weights``, so use a dict), ``dict(type='DISFlow',
            preset='fast')``, ``dict(type='RAFTFlow', weights=PATH)``, or any
            callable ``f(img_t, img_t1) -> (H, W, 2)``. None means ``'dis'``.
    """
    if cfg is None:
        cfg = 'dis'
    if isinstance(cfg, str):
        cfg = dict(type=FLOW_ALIASES.get(cfg.lower(), cfg))
    if isinstance(cfg, dict):
        cfg = dict(cfg)
        cfg['type'] = FLOW_ALIASES.get(str(cfg.get('type')).lower(),
                                       cfg.get('type'))
        if FLOW_ESTIMATORS.get(cfg['type']) is None:
            raise KeyError(f'unknown flow estimator {cfg["type"]!r}; known: '
                           f'{sorted(FLOW_ESTIMATORS.module_dict)} (or '
                           f'{sorted(FLOW_ALIASES)})')
        return FLOW_ESTIMATORS.build(cfg)
    if callable(cfg):
        return cfg
    raise TypeError(f'flow estimator must be a name, a config dict or a '
                    f'callable, got {type(cfg).__name__}')


def warp_nearest(pred_t1: np.ndarray,
                 flow: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Warp the prediction of frame ``t+1`` onto frame ``t``.

    Args:
        pred_t1 (np.ndarray): (H, W) labels of frame ``t+1``.
        flow (np.ndarray): (H, W, 2) flow ``(dx, dy)`` from ``t`` to ``t+1``.

    Returns:
        tuple: ``warped`` (H, W), the label of ``t+1`` at the flow target of
        every pixel of ``t`` (0 where invalid), and ``valid`` (H, W) bool,
        False where the target lies outside frame ``t+1``.
    """
    pred_t1 = np.asarray(pred_t1)
    flow = np.asarray(flow)
    if pred_t1.ndim != 2:
        raise ValueError(f'warp_nearest: the prediction must be (H, W), got '
                         f'{pred_t1.shape}')
    h, w = pred_t1.shape
    if flow.shape != (h, w, 2):
        raise ValueError(f'warp_nearest: the flow must be (H, W, 2) = '
                         f'{(h, w, 2)}, got {flow.shape}')
    ys, xs = np.mgrid[0:h, 0:w]
    tx = np.floor(xs + flow[..., 0].astype(np.float64) + 0.5)
    ty = np.floor(ys + flow[..., 1].astype(np.float64) + 0.5)
    finite = np.isfinite(tx) & np.isfinite(ty)
    valid = finite & (tx >= 0) & (tx < w) & (ty >= 0) & (ty < h)
    tx = np.where(valid, tx, 0).astype(np.int64)
    ty = np.where(valid, ty, 0).astype(np.int64)
    warped = np.where(valid, pred_t1[ty, tx], 0).astype(pred_t1.dtype)
    return warped, valid


def tc_confusion(pred_t: np.ndarray,
                 pred_t1: np.ndarray,
                 flow: np.ndarray,
                 num_classes: int,
                 ignore_index: Optional[int] = 255) -> Tuple[np.ndarray, int]:
    """Confusion matrix of ``P_t`` (rows) against warped ``P_{t+1}``.

    Args:
        pred_t, pred_t1 (np.ndarray): (H, W) predicted labels.
        flow (np.ndarray): (H, W, 2) flow from ``t`` to ``t+1``.
        num_classes (int): Number of classes.
        ignore_index (int, optional): A label left out on either side (a
            prediction normally has none). Defaults to 255.

    Returns:
        tuple: (num_classes, num_classes) int64 matrix and the number of
        pixels counted.
    """
    pred_t = np.asarray(pred_t)
    if pred_t.shape != np.asarray(pred_t1).shape:
        raise ValueError(f'tc_confusion: predictions of frames t and t+1 '
                         f'differ in size: {pred_t.shape} and '
                         f'{np.asarray(pred_t1).shape}')
    warped, valid = warp_nearest(pred_t1, flow)
    a = pred_t[valid].astype(np.int64)
    b = warped[valid].astype(np.int64)
    if ignore_index is not None:
        keep = (a != ignore_index) & (b != ignore_index)
        a, b = a[keep], b[keep]
    if a.size and (min(a.min(), b.min()) < 0 or
                   max(a.max(), b.max()) >= num_classes):
        raise ValueError(
            f'tc_confusion: predicted labels outside [0, {num_classes}): '
            f'[{min(a.min(), b.min())}, {max(a.max(), b.max())}]')
    conf = np.bincount(
        a * num_classes + b, minlength=num_classes * num_classes)
    return conf.reshape(num_classes, num_classes).astype(np.int64), int(a.size)


def miou_of(conf: np.ndarray) -> Tuple[float, np.ndarray]:
    """Mean IoU (in [0, 1]) and per-class IoU of a confusion matrix.

    Classes absent from both sides (union 0) get NaN and are left out of the
    mean; an empty matrix gives NaN.
    """
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(divide='ignore', invalid='ignore'):
        iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    present = iou[~np.isnan(iou)]
    return (float(present.mean()) if present.size else float('nan')), iou


class TemporalConsistency:
    """Accumulate TC over frame pairs.

    Args:
        num_classes (int): Number of classes.
        flow (str | dict | callable): Flow estimator, see
            :func:`build_flow_estimator`. Defaults to ``'dis'``.
        ignore_index (int, optional): See :func:`tc_confusion`.
    """

    def __init__(self,
                 num_classes: int,
                 flow: Union[str, dict, Callable] = 'dis',
                 ignore_index: Optional[int] = 255):
        if int(num_classes) < 1:
            raise ValueError(f'TemporalConsistency: num_classes must be >= 1,'
                             f' got {num_classes}')
        self.num_classes = int(num_classes)
        self.flow = build_flow_estimator(flow)
        self.ignore_index = ignore_index
        self.confusion = np.zeros((self.num_classes, self.num_classes),
                                  np.int64)
        self.pairs = 0
        self.valid_pixels = 0
        self.total_pixels = 0

    def pair_confusion(self, img_t: np.ndarray, img_t1: np.ndarray,
                       pred_t: np.ndarray,
                       pred_t1: np.ndarray) -> Tuple[np.ndarray, int]:
        """Flow from ``img_t`` to ``img_t1``, then :func:`tc_confusion`."""
        pred_t = np.asarray(pred_t)
        if img_t.shape[:2] != pred_t.shape:
            raise ValueError(
                f'TemporalConsistency: image size {img_t.shape[:2]} differs '
                f'from prediction size {pred_t.shape}')
        flow = np.asarray(self.flow(img_t, img_t1))
        return tc_confusion(pred_t, pred_t1, flow, self.num_classes,
                            self.ignore_index)

    def add_pair(self, img_t: np.ndarray, img_t1: np.ndarray,
                 pred_t: np.ndarray, pred_t1: np.ndarray) -> np.ndarray:
        """Add one pair of consecutive frames; return its confusion."""
        conf, valid = self.pair_confusion(img_t, img_t1, pred_t, pred_t1)
        self.confusion += conf
        self.pairs += 1
        self.valid_pixels += valid
        self.total_pixels += int(np.asarray(pred_t).size)
        return conf

    def result(self) -> dict:
        """``TC`` (percent), per-class IoU (percent), pair and pixel counts."""
        miou, iou = miou_of(self.confusion)
        return dict(
            TC=None if np.isnan(miou) else round(miou * 100, 2),
            per_class_iou=[
                None if np.isnan(v) else round(float(v) * 100, 2)
                for v in iou
            ],
            pairs=self.pairs,
            valid_pixel_ratio=(round(self.valid_pixels / self.total_pixels, 6)
                               if self.total_pixels else None))


def default_offsets(num_frames: int) -> Tuple[int, ...]:
    """The ``num_frames`` frames up to and including the annotated one."""
    if int(num_frames) < 2:
        raise ValueError(f'temporal consistency needs at least 2 frames per '
                         f'snippet, got num_frames={num_frames}')
    return tuple(range(-int(num_frames) + 1, 1))


def evaluate_temporal_consistency(model,
                                  dataset,
                                  offsets: Sequence[int] = (-3, -2, -1, 0),
                                  warmup: int = 0,
                                  flow: Union[str, dict, Callable] = 'dis',
                                  max_snippets: Optional[int] = None,
                                  progress: bool = True) -> dict:
    """TC of a segmentor run as deployed: frame by frame, with its memory.

    For every sample (annotated frame) of ``dataset``, the frames of its
    snippet at ``offsets`` (relative to the annotated frame, increasing,
    ``0`` = the annotated frame) are segmented in order by one
    :class:`~lma_mmseg.apis.StreamingSegmenter` stream (reset per snippet),
    after ``warmup`` earlier frames whose predictions only fill the memory;
    consecutive evaluated frames form the pairs of
    :class:`~lma_mmseg.evaluation.metrics.TemporalConsistencyMetric`.

    Args:
        model (BaseSegmentor): The segmentor (e.g. from
            :func:`lma_mmseg.apis.init_model`).
        dataset (VideoSegDataset): Samples and their snippet frames
            (missing frames follow its ``missing_frames`` policy).
        offsets (Sequence[int]): Offsets of the evaluated frames. Defaults
            to the 4 frames up to the annotated one.
        warmup (int): Frames before the first evaluated one, fed to the
            stream first. Defaults to 0.
        flow (str | dict | callable): Flow estimator. Defaults to ``'dis'``.
        max_snippets (int, optional): Only the first ``max_snippets``
            samples.
        progress (bool): Show an mmengine progress bar.

    Returns:
        dict: ``TC`` (percent), ``per_class_iou``, ``pairs``, ``snippets``,
        ``valid_pixel_ratio``, ``flow``, ``offsets``, ``warmup``.
    """
    import mmcv
    from mmengine.utils import ProgressBar

    from ..apis import StreamingSegmenter
    from .metrics import TemporalConsistencyMetric

    if not hasattr(dataset, 'frame_paths'):
        raise TypeError(
            f'temporal consistency needs a video dataset (VideoSegDataset, '
            f'e.g. CityscapesVideoDataset or VSPWDataset) to find the frames '
            f'of each snippet, got {type(dataset).__name__}')
    offsets = tuple(int(o) for o in offsets)
    if len(offsets) < 2:
        raise ValueError(f'temporal consistency needs at least 2 frames per '
                         f'snippet, got offsets {offsets}')
    if int(warmup) < 0:
        raise ValueError(f'warmup must be >= 0, got {warmup}')
    warm = tuple(range(offsets[0] - int(warmup), offsets[0]))
    num = len(dataset)
    if max_snippets is not None:
        if int(max_snippets) < 1:
            raise ValueError(f'max_snippets must be >= 1, got {max_snippets}')
        num = min(num, int(max_snippets))
    if num == 0:
        raise ValueError('temporal consistency: the dataset has no sample')
    classes = dataset.metainfo.get('classes') or ()
    metric = TemporalConsistencyMetric(
        num_classes=len(classes) or None, flow=flow)
    seg = StreamingSegmenter(model)
    bar = ProgressBar(num) if progress else None
    for idx in range(num):
        paths, used = dataset.frame_paths(idx, warm + offsets)
        seg.reset()
        last = None
        for path, offset in zip(paths, used):
            if path == last:  # a missing frame replaced by its neighbour
                continue
            last = path
            img = mmcv.imread(path, 'color')
            if img is None:
                raise OSError(f'frame {path} could not be read')
            result = seg(img)
            if offset < offsets[0]:
                continue
            metric.process({}, [
                dict(
                    pred_sem_seg=dict(data=result.pred_sem_seg.data),
                    img_path=path,
                    tc_snippet=idx,
                    tc_frame=offset,
                    tc_image=img)
            ])
        if bar is not None:
            bar.update()
    if progress:
        print()
    metric.compute_metrics(metric.results)
    metric.results.clear()
    details = dict(metric.details)
    details.update(offsets=list(offsets), warmup=int(warmup))
    return details
