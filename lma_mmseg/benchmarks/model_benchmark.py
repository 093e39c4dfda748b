"""Speed of a segmentor, frame by frame: ms/frame, FPS, peak memory,
params, FLOPs (``tools/benchmark.py`` is its command line).

Configs may be files or another package's (``mmseg::erfnet/...``, through
mmengine's hub). Without a checkpoint the weights are random (speed does
not depend on them).

Three ways to run a model on a video, one frame at a time (a runner each):

* ``single``: a single-frame segmentor, ``model.inference`` on the frame;
* ``streaming``: a memory model through :class:`lma_mmseg.apis.
  StreamingSegmenter`, which runs the model's own per-frame ``model.step``:
  each frame is encoded once and the memory keys and values of the frames
  the model reads are kept;
* ``reencode``: a memory model fed, at every step, the clip of the frames
  at its ``memory_offsets`` and the current frame (``model.inference`` on
  (T+1, 3, H, W)); the backbone runs ``T + 1`` times per frame. Before
  enough frames were seen, the first frame fills the clip.

A memory (LMA) model is timed in ``streaming`` and ``reencode`` by default,
a single-frame model in ``single``. A ``baseline`` (single-frame config) is
timed in the same run, interleaved frame by frame with the other modes
(:class:`~lma_mmseg.benchmarks.timer.Timer`), and the overhead of each mode
over it is given as a ratio and in ms (medians). After ``warmup`` untimed
frames, ``frames`` frames are timed: median, p90 and mean ms/frame, FPS
(1000 / mean), peak memory (:class:`~lma_mmseg.benchmarks.timer.
MemoryProbe`, in a separate pass), parameters and FLOPs (mmengine's
``FlopAnalyzer``; one multiply-add = one FLOP). Inputs are synthetic BGR
frames of ``shape`` unless ``frames_dir`` gives a folder of images. Each
frame goes through the model's data preprocessor (normalisation), not
through the config's test pipeline (no resize), so the timed resolution is
``shape``.

The result (:func:`run_model_benchmark`) has ``kind``
:data:`BENCH_KIND`, the settings, ``model`` and ``baseline`` (config,
checkpoint, params and :func:`describe_model` fields), one entry per
(model, mode) in ``results``, the overheads and ``primary``: the
:data:`PRIMARY_KEYS` of the mode a leaderboard reports (``streaming`` for
memory models, else ``single``).
"""
import collections
import glob
import os.path as osp
import platform
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import mmcv
import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import print_log
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from ..apis.complexity import count_flops
from ..apis.inference import _default_of
from ..models.segmentors.video_encoder_decoder import is_memory_model
from .problem import MODEL_MODES, ModelProblem, TimerSettings
from .timer import Timer, summarize

__all__ = [
    'BENCH_KIND', 'PRIMARY_KEYS', 'load_config', 'describe_model',
    'synthetic_frames', 'load_frames', 'count_params', 'SingleFrameRunner',
    'ReencodeRunner', 'StreamingRunner', 'make_runner', 'build_model',
    'run_model_benchmark', 'primary_summary'
]

#: ``kind`` of a benchmark JSON.
BENCH_KIND = 'lma_mmseg.benchmark'
#: Fields of ``primary`` (and of the leaderboard's speed columns).
PRIMARY_KEYS = ('mode', 'median_ms', 'p90_ms', 'mean_ms', 'fps',
                'peak_memory_mb', 'params', 'gflops')
IMG_EXTS = ('.png', '.jpg', '.jpeg', '.bmp')


# ----------------------------------------------------------------------
# configs and models
# ----------------------------------------------------------------------
def load_config(config: str) -> Config:
    """A config from a file, or from another package through mmengine's
    hub (``mmseg::erfnet/erfnet_fcn_4xb4-160k_cityscapes-512x1024.py``).

    Raises:
        FileNotFoundError: The file (or the package's config) does not
            exist; the message names ``config``.
    """
    if '::' in config:
        from mmengine.hub import get_config
        try:
            return get_config(config)
        except (FileNotFoundError, ValueError) as e:
            raise FileNotFoundError(f'config {config!r} not found: {e}') \
                from e
    if not osp.isfile(config):
        raise FileNotFoundError(f'config file {config!r} not found')
    return Config.fromfile(config)


def _type_name(cfg) -> Optional[str]:
    if cfg is None:
        return None
    t = cfg.get('type') if hasattr(cfg, 'get') else None
    return t if isinstance(t, str) or t is None else getattr(
        t, '__name__', str(t))


def _neck_setting(neck, name: str):
    """``name`` of a neck config, else the default of its class (from its
    signature)."""
    return neck[name] if name in neck else _default_of(MODELS, neck, name)


def describe_model(model) -> dict:
    """Method, backbone and memory length of a segmentor.

    Args:
        model (nn.Module | dict | mmengine.ConfigDict): A built segmentor
            or the ``model`` field of a config. A memory model is what
            :func:`~lma_mmseg.models.is_memory_model` says it is; its
            ``memory_length`` and ``window`` are the neck's (the built
            neck's attributes, else the config's values (a config's
            ``memory_offsets`` give the memory length its neck leaves out),
            else the defaults of the neck class).

    Returns:
        dict: ``segmentor`` (type name), ``backbone`` (type name), ``neck``
        (type name or None), ``method`` (``'LMA'`` for a memory model,
        else ``'single-frame'``), ``memory_length`` (0 for single-frame
        models) and ``window`` (the neck's local window or None).
    """
    if isinstance(model, nn.Module):
        model = getattr(model, 'module', model)
        neck = getattr(model, 'neck', None)
        info = dict(
            segmentor=type(model).__name__,
            backbone=type(model.backbone).__name__,
            neck=None if neck is None else type(neck).__name__)
        settings = (lambda name: getattr(neck, name, None))
    elif hasattr(model, 'get'):
        neck = model.get('neck')
        info = dict(
            segmentor=_type_name(model),
            backbone=_type_name(model.get('backbone')),
            neck=_type_name(neck))
        settings = (lambda name: _neck_setting(neck, name))
    else:
        raise TypeError(f'describe_model: expected a segmentor or a model '
                        f'config dict, got {type(model).__name__}')
    memory = is_memory_model(model)
    length = 0
    if memory:
        offsets = None if isinstance(model, nn.Module) else model.get(
            'memory_offsets')
        # a config's neck without memory_length reads len(memory_offsets)
        length = len(offsets) if offsets and 'memory_length' not in (
            neck or {}) else int(settings('memory_length'))
    info.update(
        method='LMA' if memory else 'single-frame',
        memory_length=length,
        window=settings('window') if memory else None)
    return info


def build_model(config: str, checkpoint: Optional[str], device,
                cfg_options: Optional[dict] = None) -> Tuple[nn.Module,
                                                             Config]:
    """A segmentor for inference (:func:`load_config` configs) in eval
    mode on ``device`` (SyncBN reverted on the CPU) and its config."""
    from mmengine.model import revert_sync_batchnorm

    from ..apis import init_model
    cfg = load_config(config)
    model = init_model(cfg, checkpoint, device='cpu', cfg_options=cfg_options)
    if torch.device(device).type == 'cpu':
        model = revert_sync_batchnorm(model)
    return model.to(device).eval(), model.cfg


def count_params(model: nn.Module) -> int:
    """Number of parameters."""
    return int(sum(p.numel() for p in model.parameters()))


# ----------------------------------------------------------------------
# input frames
# ----------------------------------------------------------------------
def synthetic_frames(num: int, shape: Sequence[int],
                     seed: int = 0) -> List[np.ndarray]:
    """Smooth random BGR frames panning to the right by 4 px per frame.

    Args:
        num (int): Number of distinct frames (callers cycle through them).
        shape (Sequence[int]): (H, W), at least 8x8.
        seed (int): Random seed.

    Returns:
        list[np.ndarray]: ``num`` uint8 arrays (H, W, 3).
    """
    h, w = int(shape[0]), int(shape[1])
    if h < 8 or w < 8:
        raise ValueError(f'`shape` must be at least 8x8, got {h}x{w}')
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(h // 16, 2), max(w // 16, 2) * 2, 3),
                          dtype=np.uint8)
    scene = cv2.resize(coarse, (2 * w, h), interpolation=cv2.INTER_CUBIC)
    frames = []
    for i in range(num):
        x = (4 * i) % w
        frames.append(np.ascontiguousarray(scene[:, x:x + w]))
    return frames


def load_frames(shape: Sequence[int], num: int, seed: int = 0,
                frames_dir: Optional[str] = None) -> Tuple[list, str]:
    """The input frames (BGR uint8 HxWx3) and a description of them.

    Args:
        shape (Sequence[int]): (H, W) of the frames.
        num (int): Frames wanted (synthetic ones are cycled after 64).
        seed (int): Seed of the synthetic frames.
        frames_dir (str, optional): Folder of images (sorted by name,
            resized to ``shape``) to use instead of synthetic frames.
    """
    h, w = shape
    if not frames_dir:
        return synthetic_frames(min(num, 64), (h, w), seed), (
            f'synthetic {h}x{w} (seed {seed})')
    if not osp.isdir(frames_dir):
        raise FileNotFoundError(f'`frames_dir` {frames_dir!r} is not a '
                                'folder')
    files = sorted(
        f for f in glob.glob(osp.join(frames_dir, '*'))
        if f.lower().endswith(IMG_EXTS))
    if not files:
        raise FileNotFoundError(f'`frames_dir` {frames_dir!r} holds no '
                                f'image ({", ".join(IMG_EXTS)})')
    frames = []
    for f in files[:num]:
        img = mmcv.imread(f, channel_order='bgr')
        if img is None:
            raise ValueError(f'cannot read image {f!r}')
        frames.append(mmcv.imresize(img, (w, h)))
    return frames, f'{len(frames)} frames of {frames_dir} at {h}x{w}'


# ----------------------------------------------------------------------
# runners
# ----------------------------------------------------------------------
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
        backend (str): The ``torch.compile`` backend.
    """

    mode = ''

    def __init__(self,
                 model: nn.Module,
                 compiled: bool = False,
                 dtype: Optional[torch.dtype] = None,
                 backend: str = 'inductor'):
        self.model = model
        self.compiled = bool(compiled)
        self.dtype = None if dtype in (None, torch.float32) else dtype
        self.backend = backend

    @property
    def name(self) -> str:
        """str: The mode, with ``+compile`` when compiled."""
        return self.mode + ('+compile' if self.compiled else '')

    def reset(self) -> None:
        """Forget the frames seen (before a new video)."""

    def _compile(self, fn):
        return torch.compile(
            fn, backend=self.backend) if self.compiled else fn

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
        """Segment the next frame (BGR uint8 HxWx3); the data samples."""
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
    """A memory model on the clip of the frames at ``memory_offsets`` and
    the current frame (``model.inference`` on the clip, key frame last).
    Before enough frames were seen, the first frame fills the clip.

    Args:
        model (nn.Module): The memory model.
        memory_offsets (Sequence[int]): Offsets of the memory frames,
            oldest first (the model's ``memory_offsets``).
    """

    mode = 'reencode'

    def __init__(self, model: nn.Module, memory_offsets: Sequence[int],
                 **kwargs):
        super().__init__(model, **kwargs)
        self.memory_offsets = tuple(int(o) for o in memory_offsets)
        if not self.memory_offsets or max(self.memory_offsets) >= 0:
            raise ValueError(f'ReencodeRunner: `memory_offsets` must be '
                             f'negative ints, got {memory_offsets!r}')
        span = -min(self.memory_offsets)
        self.seen = collections.deque(maxlen=span + 1)
        self.infer = self._compile(model.inference)

    def reset(self) -> None:
        self.seen.clear()

    def _frames(self, frame: np.ndarray) -> torch.Tensor:
        tensor = super()._frames(frame)
        if not self.seen:
            self.seen.extend([tensor] * (self.seen.maxlen - 1))
        self.seen.append(tensor)
        return torch.stack([self.seen[o - 1] for o in self.memory_offsets] +
                           [tensor])

    def _network(self, inputs, metas):
        return self.infer(inputs, metas)


class StreamingRunner(_Runner):
    """A memory model through :class:`lma_mmseg.apis.StreamingSegmenter`,
    each frame encoded once.

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
        from ..apis import StreamingSegmenter
        super().__init__(model, **kwargs)
        self.seg = StreamingSegmenter(
            model, step_fn=self._compile(model.step))

    def reset(self) -> None:
        self.seg.reset()

    def _network(self, inputs, metas):
        return self.seg.step(inputs, metas)


def make_runner(model: nn.Module,
                mode: str,
                config: str,
                compiled: bool = False,
                dtype: Optional[torch.dtype] = None,
                backend: str = 'inductor') -> _Runner:
    """The timed runner of ``model`` in ``mode`` (of
    :data:`~lma_mmseg.benchmarks.problem.MODEL_MODES`), optionally through
    ``torch.compile`` (with ``backend``) and under autocast to ``dtype``;
    ``config`` names the model in errors."""
    if mode not in MODEL_MODES:
        raise ValueError(f'`mode` must be one of {list(MODEL_MODES)}, got '
                         f'{mode!r}')
    memory = is_memory_model(model)
    kwargs = dict(compiled=compiled, dtype=dtype, backend=backend)
    if mode == 'single':
        if memory:
            raise ValueError(f'{config}: a memory model runs in mode '
                             'streaming or reencode, not single')
        return SingleFrameRunner(model, **kwargs)
    if not memory:
        raise ValueError(f'{config}: mode {mode} needs a memory model '
                         '(a VideoEncoderDecoder, e.g. with a '
                         'LocalMemoryNeck); use mode single')
    if mode == 'streaming':
        return StreamingRunner(model, **kwargs)
    return ReencodeRunner(model, model.memory_offsets, **kwargs)


# ----------------------------------------------------------------------
# the benchmark
# ----------------------------------------------------------------------
def _mb(num_bytes):
    return round(num_bytes / 2**20, 1)


def _build_models(problem: ModelProblem) -> Dict[str, dict]:
    """``model`` (and ``baseline``): the built model, its config, the
    config name, checkpoint and modes."""
    model, cfg = build_model(problem.config, problem.checkpoint,
                             problem.device, problem.cfg_options)
    modes = problem.modes or (('streaming', 'reencode')
                              if is_memory_model(model) else ('single', ))
    models = dict(
        model=dict(
            model=model,
            cfg=cfg,
            config=problem.config,
            checkpoint=problem.checkpoint,
            modes=list(modes)))
    if problem.baseline:
        base, base_cfg = build_model(problem.baseline,
                                     problem.baseline_checkpoint,
                                     problem.device,
                                     problem.baseline_cfg_options)
        models['baseline'] = dict(
            model=base,
            cfg=base_cfg,
            config=problem.baseline,
            checkpoint=problem.baseline_checkpoint,
            # a memory model streams, as the model does
            modes=['streaming' if is_memory_model(base) else 'single'])
    return models


def _frame_fn(runner: _Runner, frames: List[np.ndarray],
              reset: bool = False):
    """``fn(i)``: the runner on frame ``i`` (cycled); with ``reset``, frame
    0 starts a new video."""

    def run(i: int):
        if reset and i == 0:
            runner.reset()
        return runner.step(frames[i % len(frames)])

    return run


def _flops_entry(model: nn.Module, mode: str, shape, device) -> dict:
    fl = count_flops(model, mode, shape, device)
    entry = dict(
        flops=fl['flops'],
        gflops=None if fl['flops'] is None else round(fl['flops'] / 1e9, 3),
        attention_flops=fl['attention_flops'])
    if fl['unsupported_ops']:
        entry['flops_unsupported_ops'] = fl['unsupported_ops']
    if fl['error']:
        entry['flops_error'] = fl['error']
    return entry


def run_model_benchmark(problem: ModelProblem,
                        threads: Optional[int] = None,
                        flops: bool = True,
                        progress: bool = True) -> dict:
    """Time ``problem.config`` (and its baseline, interleaved) frame by
    frame.

    Args:
        problem (ModelProblem): What is timed.
        threads (int, optional): ``torch.set_num_threads`` first.
        flops (bool): Count FLOPs.
        progress (bool): Show a progress bar.

    Returns:
        dict: The benchmark JSON (``kind`` :data:`BENCH_KIND`; see the
        module docstring).
    """
    if not isinstance(problem, ModelProblem):
        raise TypeError(f'`problem` must be a ModelProblem, got '
                        f'{type(problem).__name__}')
    device = torch.device(problem.device)
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) \
                or threads < 1:
            raise ValueError(f'`threads` must be an int >= 1, got '
                             f'{threads!r}')
        torch.set_num_threads(threads)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise RuntimeError(f'`device` {problem.device}: CUDA is not '
                           'available')
    shape = list(problem.shape)
    inputs, input_desc = load_frames(shape, problem.frames + problem.warmup,
                                     problem.seed, problem.frames_dir)
    models = _build_models(problem)
    runners = {}
    for role, m in models.items():
        for mode in m['modes']:
            for compiled in (False, True) if problem.compile else (False, ):
                runner = make_runner(m['model'], mode, m['config'], compiled,
                                     problem.autocast_dtype,
                                     problem.compile_backend)
                runners[f'{role}/{runner.name}'] = runner
    print_log(
        f'timing {", ".join(runners)} on {device} at {shape[0]}x'
        f'{shape[1]} ({problem.dtype}): {problem.warmup} warm-up + '
        f'{problem.frames} frames, interleaved', 'current')
    timer = Timer(
        device,
        TimerSettings(problem.frames, problem.warmup, progress=progress))
    for runner in runners.values():
        runner.reset()
    timings = timer.run(
        {key: _frame_fn(r, inputs)
         for key, r in runners.items()})
    # over enough frames to fill the memory, each runner from a new video
    memory_steps = max([
        -min(m['model'].memory_offsets) + 2
        for m in models.values() if is_memory_model(m['model'])
    ] + [3])
    memory = timer.peak_memory(
        {key: _frame_fn(r, inputs, reset=True)
         for key, r in runners.items()}, memory_steps)
    for runner in runners.values():
        runner.reset()

    results, flop_counts = [], {}
    for key, runner in runners.items():
        role = key.split('/')[0]
        m = models[role]
        m['params'] = count_params(m['model'])
        times_ms = [t * 1e3 for t in timings[key].times_s]
        entry = dict(
            role=role,
            mode=runner.mode,
            compiled=runner.compiled,
            **summarize(times_ms))
        entry['peak_memory_mb'] = _mb(memory[key]['peak_bytes'])
        entry['peak_memory_increase_mb'] = _mb(
            memory[key]['increase_bytes'])
        entry['params'] = m['params']
        if not flops:
            entry.update(flops=None, gflops=None)
        else:
            if (role, runner.mode) not in flop_counts:
                flop_counts[role, runner.mode] = _flops_entry(
                    m['model'], runner.mode, shape, device)
            entry.update(flop_counts[role, runner.mode])
        entry['times_ms'] = [round(t, 3) for t in times_ms]
        results.append(entry)

    gpu = (torch.cuda.get_device_name(device)
           if device.type == 'cuda' else None)
    return {
        'kind': BENCH_KIND,
        'device': str(device),
        'device_name': gpu or platform.processor() or platform.machine(),
        'torch': torch.__version__,
        'cpu_threads': torch.get_num_threads(),
        'shape': shape,
        'frames': problem.frames,
        'warmup': problem.warmup,
        'input': input_desc,
        'interleaved': True,
        'memory_measure': timer.memory_description,
        'fps_definition': '1000 / mean ms per frame',
        'flops_definition': 'mmengine FlopAnalyzer, 1 multiply-add = 1 FLOP',
        'model': _model_entry(models['model']),
        'baseline': _model_entry(models.get('baseline')),
        'dtype': problem.dtype,
        'compile_backend': problem.compile_backend if problem.compile else
        None,
        'results': results,
        'overhead': _overheads(results),
        'compile_speedup': _compile_speedups(results),
        'primary': primary_summary(_primary(results, models)),
    }


def _overheads(results: List[dict]) -> List[dict]:
    """Each mode of the model against the baseline run the same way
    (eager/compiled): ratio and difference of the medians, and the median
    of the paired per-frame differences."""
    overhead = []
    for r in results:
        base = next((b for b in results if b['role'] == 'baseline'
                     and b['compiled'] == r['compiled']), None)
        if r['role'] != 'model' or base is None:
            continue
        t = np.asarray(r['times_ms'])
        base_t = np.asarray(base['times_ms'])
        overhead.append(
            dict(
                mode=r['mode'],
                compiled=r['compiled'],
                ratio=round(r['median_ms'] / base['median_ms'], 4),
                ms=round(r['median_ms'] - base['median_ms'], 3),
                paired_median_ms=round(float(np.median(t - base_t)), 3)))
    return overhead


def _compile_speedups(results: List[dict]) -> List[dict]:
    """Eager / compiled medians of each compiled run."""
    eager = {(r['role'], r['mode']): r for r in results if not r['compiled']}
    out = []
    for r in results:
        if r['compiled']:
            e = eager[r['role'], r['mode']]
            out.append(
                dict(
                    role=r['role'],
                    mode=r['mode'],
                    eager_ms=e['median_ms'],
                    compiled_ms=r['median_ms'],
                    speedup=round(e['median_ms'] / r['median_ms'], 4)))
    return out


def _primary(results: List[dict], models: Dict[str, dict]) -> dict:
    modes = models['model']['modes']
    mode = 'streaming' if 'streaming' in modes else modes[0]
    return next(r for r in results if r['role'] == 'model'
                and r['mode'] == mode and not r['compiled'])


def _model_entry(m: Optional[dict]) -> Optional[dict]:
    """``model`` / ``baseline`` of the JSON: config, checkpoint, parameter
    count and :func:`describe_model` fields."""
    if m is None:
        return None
    return dict(
        config=m['config'],
        checkpoint=m['checkpoint'],
        params=m['params'],
        **describe_model(m['model']))


def primary_summary(result: dict) -> dict:
    """The :data:`PRIMARY_KEYS` of one entry of ``results``."""
    return {k: result[k] for k in PRIMARY_KEYS}
