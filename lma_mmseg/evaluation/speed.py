"""Speed measurement of segmentors: per-frame runners, timing, memory, FLOPs.

Three ways to run a model on a video, one frame at a time:

* ``single``: a single-frame segmentor, ``model.test_step`` on the frame;
* ``streaming``: a memory model through :class:`lma_mmseg.apis.
  StreamingSegmenter`, which encodes each frame once and keeps the memory
  keys and values of the last ``T`` frames;
* ``reencode``: a memory model fed the clip of the last ``T + 1`` frames at
  every step (``model.test_step`` on (T+1, 3, H, W)); the backbone runs
  ``T + 1`` times per frame. Before ``T`` frames were seen, the first frame
  fills the clip.

:func:`run_interleaved` times several runners frame by frame in turn (the
order alternates between frames), so that slow drifts of a shared machine
(thermal state, other jobs) affect all of them alike.

Peak memory is measured in a separate pass after the timing (so that it
does not disturb it), one runner after the other, over a few frames each
(enough to fill the memory): on CUDA, ``torch.cuda.max_memory_allocated``
during a frame (reset before it); on CPU, the peak resident set size
(``VmHWM``) of the process during a frame, reset before it by writing ``5`` to
``/proc/self/clear_refs`` (Linux), after glibc's ``malloc_trim(0)`` has
handed freed heap memory back to the system, so that the increase over the
resident size just before the frame is the memory the frame needed. The
absolute CPU figure is process-wide (interpreter, libraries, every loaded
model). Where ``clear_refs`` is unavailable, ``getrusage`` peak RSS is used
(not resettable, so no increase is measured).
"""
import collections
import ctypes
import ctypes.util
import gc
import resource
import sys
import time
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
import torch
import torch.nn as nn
from mmseg.structures import SegDataSample

from ..apis.complexity import count_flops
from ..models.segmentors.video_encoder_decoder import is_memory_model

__all__ = [
    'synthetic_frames', 'SingleFrameRunner', 'ReencodeRunner',
    'StreamingRunner', 'MemoryProbe', 'run_interleaved',
    'measure_peak_memory', 'summarize',
    'count_params', 'count_flops', 'is_memory_model'
]


def synthetic_frames(num: int, shape: Sequence[int],
                     seed: int = 0) -> List[np.ndarray]:
    """Smooth random BGR frames panning to the right by 4 px per frame.

    Args:
        num (int): Number of distinct frames (callers cycle through them).
        shape (Sequence[int]): (H, W).
        seed (int): Random seed.

    Returns:
        list[np.ndarray]: ``num`` uint8 arrays (H, W, 3).
    """
    h, w = int(shape[0]), int(shape[1])
    if h < 8 or w < 8:
        raise ValueError(f'--shape must be at least 8x8, got {h}x{w}')
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(h // 16, 2), max(w // 16, 2) * 2, 3),
                          dtype=np.uint8)
    scene = cv2.resize(coarse, (2 * w, h), interpolation=cv2.INTER_CUBIC)
    frames = []
    for i in range(num):
        x = (4 * i) % w
        frames.append(np.ascontiguousarray(scene[:, x:x + w]))
    return frames


def _sample(shape) -> SegDataSample:
    h, w = shape
    return SegDataSample(
        metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))


class _Runner:
    """What every runner runs per frame: the data preprocessor, the network
    (optionally compiled with ``torch.compile`` and/or under
    ``torch.autocast`` with ``dtype``) and ``model.postprocess_result``.

    Args:
        model (nn.Module): The segmentor (eval mode).
        compiled (bool): Run the network through ``torch.compile``.
        dtype (torch.dtype, optional): ``torch.float16`` or
            ``torch.bfloat16`` runs the network under ``torch.autocast``;
            None or ``torch.float32`` runs it as it is.
    """

    mode = ''

    def __init__(self,
                 model: nn.Module,
                 compiled: bool = False,
                 dtype: Optional[torch.dtype] = None):
        self.model = model
        self.compiled = bool(compiled)
        self.dtype = None if dtype in (None, torch.float32) else dtype

    @property
    def name(self) -> str:
        """str: The mode, with ``+compile`` when compiled."""
        return self.mode + ('+compile' if self.compiled else '')

    def reset(self) -> None:
        pass

    def _compile(self, fn):
        return torch.compile(fn) if self.compiled else fn

    def _autocast(self, inputs: torch.Tensor):
        return torch.autocast(
            inputs.device.type,
            dtype=self.dtype or torch.float32,
            enabled=self.dtype is not None)

    def _preprocess(self, tensor: torch.Tensor, shape):
        data = self.model.data_preprocessor(
            dict(inputs=[tensor], data_samples=[_sample(shape)]), False)
        return data['inputs'], data['data_samples']

    def _network(self, inputs, metas):
        raise NotImplementedError

    def _frames(self, frame: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(frame).permute(2, 0, 1).contiguous()

    def step(self, frame: np.ndarray):
        with torch.no_grad():
            inputs, samples = self._preprocess(
                self._frames(frame), frame.shape[:2])
            with self._autocast(inputs):
                logits = self._network(inputs, [s.metainfo for s in samples])
            return self.model.postprocess_result(logits.float(), samples)


class SingleFrameRunner(_Runner):
    """A single-frame segmentor on one BGR frame (3, H, W) per step
    (``model.inference``, as ``model.test_step`` runs it)."""

    mode = 'single'

    def __init__(self, model: nn.Module, **kwargs):
        super().__init__(model, **kwargs)
        self.infer = self._compile(model.inference)

    def _network(self, inputs, metas):
        return self.infer(inputs, metas)


class ReencodeRunner(_Runner):
    """A memory model on the clip of the last ``T + 1`` frames
    (``model.inference`` on the clip). Before ``T`` frames were seen, the
    first frame fills the clip."""

    mode = 'reencode'

    def __init__(self, model: nn.Module, memory_length: int, **kwargs):
        super().__init__(model, **kwargs)
        self.memory_length = int(memory_length)
        self.clip = collections.deque(maxlen=self.memory_length + 1)
        self.infer = self._compile(model.inference)

    def reset(self) -> None:
        self.clip.clear()

    def _frames(self, frame: np.ndarray) -> torch.Tensor:
        tensor = super()._frames(frame)
        if not self.clip:
            self.clip.extend([tensor] * self.memory_length)
        self.clip.append(tensor)
        return torch.stack(list(self.clip))

    def _network(self, inputs, metas):
        return self.infer(inputs, metas)


class StreamingRunner(_Runner):
    """:class:`lma_mmseg.apis.StreamingSegmenter`, each frame encoded once.

    Each step runs what ``model.test_step`` runs for the other modes: the
    data preprocessor on the frame, :meth:`StreamingSegmenter.step` (which
    runs the model's own per-frame ``model.step``: the backbone on the new
    frame, the memory read by the neck, the decoder, the frame's memory key
    and value pushed) and ``model.postprocess_result``; the config's test
    pipeline (and its resize) is not used, so every mode sees the same
    input. Compiled, ``model.step`` goes through ``torch.compile``.
    """

    mode = 'streaming'

    def __init__(self, model: nn.Module, **kwargs):
        from lma_mmseg.apis import StreamingSegmenter
        super().__init__(model, **kwargs)
        self.seg = StreamingSegmenter(
            model, step_fn=self._compile(model.step))

    def reset(self) -> None:
        self.seg.reset()

    def _network(self, inputs, metas):
        return self.seg.step(inputs, metas)


def _malloc_trim() -> None:
    """Give freed heap memory back to the system (glibc only)."""
    name = ctypes.util.find_library('c')
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


def _read_status(field: str) -> Optional[int]:
    """A ``kB`` field of /proc/self/status in bytes, or None."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class MemoryProbe:
    """Peak memory of one call (see the module docstring).

    Args:
        device (torch.device): The device the models run on.
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.cuda = self.device.type == 'cuda'
        self.clear_refs = False
        if not self.cuda:
            try:
                with open('/proc/self/clear_refs', 'w') as f:
                    f.write('5')
                self.clear_refs = _read_status('VmHWM') is not None
            except OSError:
                self.clear_refs = False

    @property
    def description(self) -> str:
        if self.cuda:
            return ('torch.cuda.max_memory_allocated during a frame (reset '
                    'before it), maximum over a separate pass of a few '
                    'frames; increase over memory_allocated before it')
        if self.clear_refs:
            return ('CPU: peak resident set size of the process during a '
                    'frame (VmHWM, reset before it via /proc/self/clear_refs '
                    'after malloc_trim), maximum over a separate pass of '
                    'a few frames; absolute figure process-wide, increase '
                    'over the RSS before the frame')
        return ('CPU: peak resident set size of the process so far '
                '(getrusage ru_maxrss, not resettable); process-wide')

    def before(self) -> int:
        """Reset the peak counter; return the current usage in bytes."""
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            return torch.cuda.memory_allocated(self.device)
        if self.clear_refs:
            gc.collect()
            _malloc_trim()
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')
            return _read_status('VmRSS') or 0
        return 0

    def after(self) -> int:
        """Peak usage in bytes since :meth:`before`."""
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device)
        if self.clear_refs:
            return _read_status('VmHWM') or 0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == 'darwin' else peak * 1024


def run_interleaved(runners: Dict[str, object],
                    frames: List[np.ndarray],
                    num_frames: int,
                    warmup: int,
                    device,
                    progress: bool = True) -> Dict[str, List[float]]:
    """Time several runners on the same frames, interleaved frame by frame.

    Every frame goes to every runner in turn, the order reversing on every
    other frame.

    Args:
        runners (dict[str, runner]): Name -> runner with ``reset()`` and
            ``step(frame)``.
        frames (list[np.ndarray]): BGR frames, cycled through.
        num_frames (int): Timed frames per runner.
        warmup (int): Untimed frames per runner before them.
        device: Device of the models (CUDA is synchronised around calls).
        progress (bool): Show an mmengine progress bar.

    Returns:
        dict[str, list[float]]: Per runner, the times (ms) of the timed
        frames.
    """
    if num_frames < 1:
        raise ValueError(f'--frames must be >= 1, got {num_frames}')
    if warmup < 0:
        raise ValueError(f'--warmup must be >= 0, got {warmup}')
    if not frames:
        raise ValueError('no input frames')
    device = torch.device(device)
    cuda = device.type == 'cuda'
    names = list(runners)
    for runner in runners.values():
        runner.reset()
    times = {n: [] for n in names}
    total = warmup + num_frames
    bar = None
    if progress:
        from mmengine.utils import ProgressBar
        bar = ProgressBar(total * len(names))
    for i in range(total):
        frame = frames[i % len(frames)]
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            if cuda:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            runners[name].step(frame)
            if cuda:
                torch.cuda.synchronize(device)
            elapsed = (time.perf_counter() - start) * 1000.0
            if i >= warmup:
                times[name].append(elapsed)
            if bar is not None:
                bar.update()
    if bar is not None:
        sys.stdout.write('\n')
    return times


def measure_peak_memory(runners: Dict[str, object],
                        frames: List[np.ndarray],
                        steps: int,
                        device) -> Dict[str, dict]:
    """Peak memory of each runner, alone, over ``steps`` frames.

    Args:
        runners (dict[str, runner]): Name -> runner.
        frames (list[np.ndarray]): BGR frames, cycled through.
        steps (int): Frames per runner (at least the memory length + 1 so
            the memory is full).
        device: Device of the models.

    Returns:
        dict: Per runner ``peak_bytes`` and ``increase_bytes`` (maxima over
        the frames), and ``_description``: how it was measured.
    """
    probe = MemoryProbe(device)
    out = {}
    for name, runner in runners.items():
        runner.reset()
        peak = increase = 0
        for i in range(max(int(steps), 1)):
            base = probe.before()
            runner.step(frames[i % len(frames)])
            if probe.cuda:
                torch.cuda.synchronize(probe.device)
            now = probe.after()
            peak = max(peak, now)
            increase = max(increase, now - base)
        runner.reset()
        out[name] = dict(peak_bytes=peak, increase_bytes=increase)
    out['_description'] = probe.description
    return out


def summarize(times_ms: Sequence[float]) -> dict:
    """Median, p90, mean, min of per-frame times (ms) and FPS.

    ``fps`` is the throughput ``1000 / mean``; ``fps_median`` is
    ``1000 / median``.
    """
    t = np.asarray(times_ms, dtype=np.float64)
    if t.size == 0:
        raise ValueError('no timed frame')
    median = float(np.median(t))
    mean = float(t.mean())
    return dict(
        frames=int(t.size),
        median_ms=round(median, 3),
        p90_ms=round(float(np.percentile(t, 90)), 3),
        mean_ms=round(mean, 3),
        min_ms=round(float(t.min()), 3),
        fps=round(1000.0 / mean, 2),
        fps_median=round(1000.0 / median, 2))


def count_params(model: nn.Module) -> int:
    """Number of parameters."""
    return int(sum(p.numel() for p in model.parameters()))
