"""The benchmark runner and its JSON: ms/frame, FPS, peak memory, params,
FLOPs of a segmentor, frame by frame (``tools/benchmark.py`` is its command
line; option names below are the tool's).

Configs may be files or mmseg's own (``mmseg::erfnet/...``). Without a
checkpoint the weights are random (speed does not depend on them).

* A memory (LMA) model is timed in two modes: ``streaming`` (each frame
  encoded once through :class:`lma_mmseg.apis.StreamingSegmenter`) and
  ``reencode`` (``model.predict`` on the last ``T + 1`` frames at every
  step); a single-frame model in mode ``single``.
* ``--baseline CONFIG`` times a single-frame model in the same run,
  interleaved frame by frame with the other modes, and the overhead of each
  mode over it is printed as a ratio and in ms (medians).
* After ``--warmup`` untimed frames, ``--frames`` frames are timed: median,
  p90 and mean ms/frame, FPS (1000 / mean), peak memory (see
  :mod:`lma_mmseg.evaluation.speed`), parameters and FLOPs (mmengine's
  ``FlopAnalyzer``; one multiply-add = one FLOP).
* Inputs are synthetic BGR frames of ``--shape`` (default 512 1024) unless
  ``--frames-dir`` gives a folder of images (sorted by name, resized to
  ``--shape``). Each frame goes through the model's data preprocessor
  (normalisation), not through the config's test pipeline (no resize), so
  the timed resolution is ``--shape``.

The JSON (:func:`run_benchmark`; ``--out``) has ``kind: lma_mmseg.benchmark``
(:data:`BENCH_KIND`), the settings, ``model`` and ``baseline`` (config,
checkpoint, params and :func:`~lma_mmseg.evaluation.model_info.describe_model`
fields), one entry per (model, mode) in ``results``, the overheads and
``primary``: the :data:`PRIMARY_KEYS` of the mode a leaderboard reports
(``streaming`` for memory models, else ``single``).
"""

import glob
import os.path as osp
import platform
from typing import Optional, Sequence, Tuple

import mmcv
import numpy as np
import torch
from mmengine.config import Config
from mmengine.logging import print_log
from prettytable import PrettyTable

from .model_info import describe_model
from .speed import (ReencodeRunner, SingleFrameRunner, StreamingRunner,
                    count_flops, count_params, is_memory_model,
                    measure_peak_memory, run_interleaved, summarize,
                    synthetic_frames)

#: ``kind`` of a benchmark JSON.
BENCH_KIND = 'lma_mmseg.benchmark'
#: Timing modes: a single-frame model, a memory model streaming (each frame
#: encoded once) or re-encoding its T + 1 frames at every step.
MODES = ('single', 'streaming', 'reencode')
#: Fields of ``primary`` (and of the leaderboard's speed columns).
PRIMARY_KEYS = ('mode', 'median_ms', 'p90_ms', 'mean_ms', 'fps',
                'peak_memory_mb', 'params', 'gflops')
IMG_EXTS = ('.png', '.jpg', '.jpeg', '.bmp')
#: ``--dtype`` choices: the autocast dtype of the networks (float32: none).
DTYPES = {
    'float32': None,
    'float16': torch.float16,
    'bfloat16': torch.bfloat16
}


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
        raise FileNotFoundError(f'--frames-dir {frames_dir!r} is not a '
                                'folder')
    files = sorted(
        f for f in glob.glob(osp.join(frames_dir, '*'))
        if f.lower().endswith(IMG_EXTS))
    if not files:
        raise FileNotFoundError(f'--frames-dir {frames_dir!r} holds no '
                                f'image ({", ".join(IMG_EXTS)})')
    frames = []
    for f in files[:num]:
        img = mmcv.imread(f, channel_order='bgr')
        if img is None:
            raise ValueError(f'cannot read image {f!r}')
        frames.append(mmcv.imresize(img, (w, h)))
    return frames, f'{len(frames)} frames of {frames_dir} at {h}x{w}'


def resolve_config(config: str) -> str:
    """Path of a config file; ``mmseg::x.py`` is mmseg's packaged config."""
    path = config
    if config.startswith('mmseg::'):
        import mmseg
        path = osp.join(
            osp.dirname(mmseg.__file__), '.mim', 'configs',
            config[len('mmseg::'):])
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file {config!r} not found')
    return path


def build_model(config, checkpoint, device, cfg_options=None):
    """Build a segmentor for inference (mmseg:: configs allowed)."""
    from lma_mmseg.apis import init_model
    cfg = Config.fromfile(resolve_config(config))
    model = init_model(cfg, checkpoint, device='cpu', cfg_options=cfg_options)
    if torch.device(device).type == 'cpu':
        from mmengine.model import revert_sync_batchnorm
        model = revert_sync_batchnorm(model)
    return model.to(device).eval(), cfg


def make_runner(model,
                mode: str,
                config: str,
                compiled: bool = False,
                dtype: Optional[torch.dtype] = None):
    """The timed runner of ``model`` in ``mode`` (see :data:`MODES`),
    optionally through ``torch.compile`` and under autocast to ``dtype``."""
    memory = is_memory_model(model)
    kwargs = dict(compiled=compiled, dtype=dtype)
    if mode == 'single':
        if memory:
            raise ValueError(f'{config}: a memory model runs in mode '
                             'streaming or reencode, not single')
        return SingleFrameRunner(model, **kwargs)
    if not memory:
        raise ValueError(f'{config}: mode {mode} needs a memory model '
                         '(a neck with encode_memory, e.g. LocalMemoryNeck);'
                         ' use mode single')
    if mode == 'streaming':
        return StreamingRunner(model, **kwargs)
    return ReencodeRunner(model, model.memory_length, **kwargs)


def _mb(num_bytes):
    return round(num_bytes / 2**20, 1)


def run_benchmark(config: str,
                  checkpoint: Optional[str] = None,
                  baseline: Optional[str] = None,
                  baseline_checkpoint: Optional[str] = None,
                  device: str = 'cpu',
                  shape: Sequence[int] = (512, 1024),
                  frames: int = 200,
                  warmup: int = 20,
                  modes: Optional[Sequence[str]] = None,
                  threads: Optional[int] = None,
                  frames_dir: Optional[str] = None,
                  seed: int = 0,
                  flops: bool = True,
                  progress: bool = True,
                  cfg_options: Optional[dict] = None,
                  compile: bool = False,
                  dtype: str = 'float32') -> dict:
    """Time ``config`` (and ``baseline``, interleaved) frame by frame.

    Args:
        config (str): Config file or ``mmseg::...``.
        checkpoint (str, optional): Its weights (default: random).
        baseline (str, optional): A single-frame config timed in the same
            run; the overhead over it is reported.
        baseline_checkpoint (str, optional): The baseline's weights.
        device (str): ``cpu``, ``cuda`` or ``cuda:N``.
        shape (Sequence[int]): Input (H, W).
        frames (int): Timed frames.
        warmup (int): Untimed frames first.
        modes (Sequence[str], optional): Modes of ``config`` (default:
            ``streaming``, ``reencode`` for memory models, else ``single``).
        threads (int, optional): ``torch.set_num_threads``.
        frames_dir (str, optional): Folder of input images (default:
            synthetic frames).
        seed (int): Seed of the synthetic frames.
        flops (bool): Count FLOPs.
        progress (bool): Show a progress bar.
        cfg_options (dict, optional): Overrides of ``config``.
        compile (bool): Also time every mode through ``torch.compile``
            (``model.step`` for streaming, ``model.inference`` otherwise),
            interleaved with eager; ``compile_speedup`` gives eager /
            compiled medians.
        dtype (str): ``float32``, or ``float16`` / ``bfloat16`` to run the
            networks under ``torch.autocast``.

    Returns:
        dict: The benchmark JSON (``kind`` :data:`BENCH_KIND`; see the
        module docstring).
    """
    shape = list(shape)
    if dtype not in DTYPES:
        raise ValueError(f'--dtype must be one of {list(DTYPES)}, got '
                         f'{dtype!r}')
    device_name = device
    device = torch.device(device)
    if threads is not None:
        if threads < 1:
            raise ValueError(f'--threads must be >= 1, got {threads}')
        torch.set_num_threads(threads)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise RuntimeError(f'--device {device_name}: CUDA is not available')
    inputs, input_desc = load_frames(shape, frames + warmup, seed, frames_dir)
    models = {}
    model, cfg = build_model(config, checkpoint, device, cfg_options)
    modes = modes or (['streaming', 'reencode']
                      if is_memory_model(model) else ['single'])
    models['model'] = dict(
        model=model, cfg=cfg, config=config,
        checkpoint=checkpoint, modes=list(dict.fromkeys(modes)))
    if baseline:
        base, base_cfg = build_model(baseline, baseline_checkpoint, device)
        if is_memory_model(base):
            raise ValueError(f'--baseline {baseline}: expected a '
                             'single-frame model')
        models['baseline'] = dict(
            model=base, cfg=base_cfg, config=baseline,
            checkpoint=baseline_checkpoint, modes=['single'])

    runners = {}
    for role, m in models.items():
        for mode in m['modes']:
            for compiled in (False, True) if compile else (False, ):
                runner = make_runner(m['model'], mode, m['config'], compiled,
                                     DTYPES[dtype])
                runners[f'{role}/{runner.name}'] = runner
    print_log(
        f'timing {", ".join(runners)} on {device} at {shape[0]}x'
        f'{shape[1]} ({dtype}): {warmup} warm-up + {frames} frames, '
        'interleaved', 'current')
    times = run_interleaved(runners, inputs, frames, warmup,
                            device, progress=progress)
    memory_steps = max([
        m['model'].memory_length + 2
        for m in models.values() if is_memory_model(m['model'])
    ] + [3])
    memory = measure_peak_memory(runners, inputs, memory_steps, device)
    memory_measure = memory.pop('_description')

    results = []
    flop_counts = {}
    for key, runner in runners.items():
        role = key.split('/')[0]
        m = models[role]
        params = count_params(m['model'])
        m['params'] = params
        mode = runner.mode
        entry = dict(
            role=role,
            mode=mode,
            compiled=runner.compiled,
            **summarize(times[key]))
        entry['peak_memory_mb'] = _mb(memory[key]['peak_bytes'])
        entry['peak_memory_increase_mb'] = _mb(
            memory[key]['increase_bytes'])
        entry['params'] = params
        if not flops:
            entry.update(flops=None, gflops=None)
        else:
            if (role, mode) not in flop_counts:
                flop_counts[role, mode] = count_flops(
                    m['model'], mode, shape, device)
            fl = flop_counts[role, mode]
            entry['flops'] = fl['flops']
            entry['gflops'] = (None if fl['flops'] is None else round(
                fl['flops'] / 1e9, 3))
            entry['attention_flops'] = fl['attention_flops']
            if fl['unsupported_ops']:
                entry['flops_unsupported_ops'] = fl['unsupported_ops']
            if fl['error']:
                entry['flops_error'] = fl['error']
        entry['times_ms'] = [round(t, 3) for t in times[key]]
        results.append(entry)

    overhead = []
    for r in results:
        # each mode against the baseline run the same way (eager/compiled)
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
    eager = {(r['role'], r['mode']): r for r in results if not r['compiled']}
    compile_speedup = []
    for r in results:
        if r['compiled']:
            e = eager[r['role'], r['mode']]
            compile_speedup.append(
                dict(
                    role=r['role'],
                    mode=r['mode'],
                    eager_ms=e['median_ms'],
                    compiled_ms=r['median_ms'],
                    speedup=round(e['median_ms'] / r['median_ms'], 4)))

    primary_mode = 'streaming' if 'streaming' in models['model'][
        'modes'] else models['model']['modes'][0]
    primary = next(
        r for r in results if r['role'] == 'model'
        and r['mode'] == primary_mode and not r['compiled'])
    gpu = (torch.cuda.get_device_name(device)
           if device.type == 'cuda' else None)
    return {
        'kind': BENCH_KIND,
        'device': str(device),
        'device_name': gpu or platform.processor() or platform.machine(),
        'torch': torch.__version__,
        'cpu_threads': torch.get_num_threads(),
        'shape': shape,
        'frames': frames,
        'warmup': warmup,
        'input': input_desc,
        'interleaved': True,
        'memory_measure': memory_measure,
        'fps_definition': '1000 / mean ms per frame',
        'flops_definition': 'mmengine FlopAnalyzer, 1 multiply-add = 1 FLOP',
        'model': _model_entry(models['model']),
        'baseline': _model_entry(models.get('baseline')),
        'dtype': dtype,
        'results': results,
        'overhead': overhead,
        'compile_speedup': compile_speedup,
        'primary': primary_summary(primary),
    }


def _model_entry(m: Optional[dict]) -> Optional[dict]:
    """``model`` / ``baseline`` of the JSON: config, checkpoint, parameter
    count and :func:`describe_model` fields."""
    if m is None:
        return None
    return dict(
        config=m['config'],
        checkpoint=m['checkpoint'],
        params=m['params'],
        **describe_model(m['cfg'].model))


def primary_summary(result: dict) -> dict:
    """The :data:`PRIMARY_KEYS` of one entry of ``results``."""
    return {k: result[k] for k in PRIMARY_KEYS}


def baseline_report(res: dict) -> dict:
    """The baseline's part of an interleaved run, shaped as a benchmark of
    the baseline alone (its timings were taken in the same run as the
    model's, so the two are comparable)."""
    results = [dict(r, role='model') for r in res['results']
               if r['role'] == 'baseline']
    eager = [r for r in results if not r.get('compiled')]
    return {
        **res,
        'model': res['baseline'],
        'baseline': None,
        'results': results,
        'overhead': [],
        'compile_speedup': [
            c for c in res.get('compile_speedup', [])
            if c['role'] == 'baseline'
        ],
        'primary': primary_summary(eager[0]),
        'interleaved_with': res['model']['config'],
    }


def format_report(res: dict) -> str:
    """The benchmark JSON as a text table with the overheads."""
    table = PrettyTable()
    table.field_names = [
        'model', 'mode', 'median ms', 'p90 ms', 'mean ms', 'FPS',
        'peak mem MB', 'frame mem MB', 'params M', 'GFLOPs'
    ]
    for r in res['results']:
        cfg = res[r['role']]['config']
        table.add_row([
            f'{r["role"]}: {osp.basename(cfg)}',
            r['mode'] + ('+compile' if r.get('compiled') else ''),
            r['median_ms'],
            r['p90_ms'], r['mean_ms'], r['fps'], r['peak_memory_mb'],
            r['peak_memory_increase_mb'],
            round(r['params'] / 1e6, 3),
            '-' if r.get('gflops') is None else r['gflops']
        ])
    lines = [
        f'device {res["device"]} ({res["device_name"]}), input '
        f'{res["input"]}, {res.get("dtype", "float32")}, {res["warmup"]} '
        f'warm-up + {res["frames"]} timed frames, interleaved',
        table.get_string(),
        'peak mem MB: peak during a frame; frame mem MB: its increase over '
        f'the usage before the frame. {res["memory_measure"]}'
    ]
    for o in res['overhead']:
        mode = o['mode'] + ('+compile' if o.get('compiled') else '')
        lines.append(f'overhead of {mode} over the baseline: '
                     f'x{o["ratio"]:.3f}, {o["ms"]:+.2f} ms/frame (median), '
                     f'{o["paired_median_ms"]:+.2f} ms (median of paired '
                     'frame differences)')
    for c in res.get('compile_speedup', []):
        lines.append(f'torch.compile, {c["role"]} {c["mode"]}: '
                     f'{c["eager_ms"]:.2f} -> {c["compiled_ms"]:.2f} ms '
                     f'(eager / compiled x{c["speedup"]:.3f})')
    return '\n'.join(lines)
