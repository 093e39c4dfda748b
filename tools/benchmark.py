"""Time a segmentor frame by frame: ms/frame, FPS, peak memory, params, FLOPs.

Usage::

    python tools/benchmark.py CONFIG [--checkpoint CKPT]
        [--baseline CONFIG [--baseline-checkpoint CKPT]]
        [--device cpu|cuda] [--shape H W] [--frames N] [--warmup N]
        [--modes single|streaming|reencode ...] [--frames-dir DIR]
        [--threads N]
        [--out JSON] [--no-flops] [--cfg-options KEY=VALUE ...]

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

The JSON (``--out``, written atomically) has ``kind: lma_mmseg.benchmark``,
the settings, one entry per (model, mode) in ``results``, the overheads and
``primary``: the mode a leaderboard reports (``streaming`` for memory models,
else ``single``).
"""
import argparse
import glob
import os.path as osp
import platform
import sys

import mmcv
import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from prettytable import PrettyTable

from lma_mmseg.evaluation.model_info import describe_model
from lma_mmseg.evaluation.speed import (ReencodeRunner, SingleFrameRunner,
                                        StreamingRunner, count_flops,
                                        count_params, is_memory_model,
                                        measure_peak_memory, run_interleaved,
                                        summarize, synthetic_frames)
from lma_mmseg.fileio import atomic_write_json

MODES = ('single', 'streaming', 'reencode')
IMG_EXTS = ('.png', '.jpg', '.jpeg', '.bmp')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Benchmark the per-frame speed of a segmentor')
    parser.add_argument('config', help='config file (or mmseg::...)')
    parser.add_argument('--checkpoint', help='checkpoint (default: random)')
    parser.add_argument(
        '--baseline', help='single-frame config timed in the same run')
    parser.add_argument('--baseline-checkpoint', help='baseline checkpoint')
    parser.add_argument(
        '--device',
        default='cuda' if torch.cuda.is_available() else 'cpu',
        help='cpu, cuda or cuda:N (default: cuda when available)')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        default=[512, 1024],
        metavar=('H', 'W'),
        help='input resolution (default 512 1024)')
    parser.add_argument(
        '--frames', type=int, default=200, help='timed frames (default 200)')
    parser.add_argument(
        '--warmup', type=int, default=20, help='warm-up frames (default 20)')
    parser.add_argument(
        '--modes',
        nargs='+',
        choices=MODES,
        help='modes of CONFIG (default: streaming reencode for memory '
        'models, single otherwise)')
    parser.add_argument(
        '--threads',
        type=int,
        help='CPU threads of torch (torch.set_num_threads); on a shared or '
        'small machine 1 avoids oversubscription')
    parser.add_argument(
        '--frames-dir', help='folder of frames to use instead of synthetic')
    parser.add_argument('--seed', type=int, default=0, help='synthetic seed')
    parser.add_argument('--out', help='JSON file for the results')
    parser.add_argument(
        '--baseline-out',
        help='also write the baseline\'s results from this interleaved run '
        'as a JSON of its own (e.g. for its leaderboard row)')
    parser.add_argument(
        '--no-flops', action='store_true', help='skip the FLOP count')
    parser.add_argument(
        '--no-progress', action='store_true', help='hide the progress bar')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='overrides of CONFIG, key=value pairs')
    args = parser.parse_args(argv)
    if args.baseline_out and not args.baseline:
        parser.error('--baseline-out needs --baseline')
    return args


def load_frames(args):
    """The input frames (BGR uint8 HxWx3) and a description of them."""
    h, w = args.shape
    if not args.frames_dir:
        num = min(args.frames + args.warmup, 64)
        return synthetic_frames(num, (h, w), args.seed), (
            f'synthetic {h}x{w} (seed {args.seed})')
    if not osp.isdir(args.frames_dir):
        raise FileNotFoundError(f'--frames-dir {args.frames_dir!r} is not a '
                                'folder')
    files = sorted(
        f for f in glob.glob(osp.join(args.frames_dir, '*'))
        if f.lower().endswith(IMG_EXTS))
    if not files:
        raise FileNotFoundError(f'--frames-dir {args.frames_dir!r} holds no '
                                f'image ({", ".join(IMG_EXTS)})')
    frames = []
    for f in files[:args.frames + args.warmup]:
        img = mmcv.imread(f, channel_order='bgr')
        if img is None:
            raise ValueError(f'cannot read image {f!r}')
        frames.append(mmcv.imresize(img, (w, h)))
    return frames, f'{len(frames)} frames of {args.frames_dir} at {h}x{w}'


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


def make_runner(model, mode, config):
    memory = is_memory_model(model)
    if mode == 'single':
        if memory:
            raise ValueError(f'{config}: a memory model runs in mode '
                             'streaming or reencode, not single')
        return SingleFrameRunner(model)
    if not memory:
        raise ValueError(f'{config}: mode {mode} needs a memory model '
                         '(a neck with encode_memory, e.g. LocalMemoryNeck);'
                         ' use mode single')
    if mode == 'streaming':
        return StreamingRunner(model)
    return ReencodeRunner(model, model.neck.memory_length)


def _mb(num_bytes):
    return round(num_bytes / 2**20, 1)


def benchmark(args) -> dict:
    """Run the benchmark described by ``args``; return the JSON dict."""
    device = torch.device(args.device)
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f'--threads must be >= 1, got {args.threads}')
        torch.set_num_threads(args.threads)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise RuntimeError(f'--device {args.device}: CUDA is not available')
    frames, input_desc = load_frames(args)
    models = {}
    model, cfg = build_model(args.config, args.checkpoint, device,
                             args.cfg_options)
    modes = args.modes or (['streaming', 'reencode']
                           if is_memory_model(model) else ['single'])
    models['model'] = dict(
        model=model, cfg=cfg, config=args.config,
        checkpoint=args.checkpoint, modes=list(dict.fromkeys(modes)))
    if args.baseline:
        base, base_cfg = build_model(args.baseline, args.baseline_checkpoint,
                                     device)
        if is_memory_model(base):
            raise ValueError(f'--baseline {args.baseline}: expected a '
                             'single-frame model')
        models['baseline'] = dict(
            model=base, cfg=base_cfg, config=args.baseline,
            checkpoint=args.baseline_checkpoint, modes=['single'])

    runners = {}
    for role, m in models.items():
        for mode in m['modes']:
            runners[f'{role}/{mode}'] = make_runner(m['model'], mode,
                                                    m['config'])
    print_log(
        f'timing {", ".join(runners)} on {device} at {args.shape[0]}x'
        f'{args.shape[1]}: {args.warmup} warm-up + {args.frames} frames, '
        'interleaved', 'current')
    times = run_interleaved(runners, frames, args.frames, args.warmup,
                            device, progress=not args.no_progress)
    memory_steps = max([
        m['model'].neck.memory_length + 2
        for m in models.values() if is_memory_model(m['model'])
    ] + [3])
    memory = measure_peak_memory(runners, frames, memory_steps, device)
    memory_measure = memory.pop('_description')

    results = []
    for role, m in models.items():
        params = count_params(m['model'])
        m['params'] = params
        for mode in m['modes']:
            key = f'{role}/{mode}'
            entry = dict(role=role, mode=mode, **summarize(times[key]))
            entry['peak_memory_mb'] = _mb(memory[key]['peak_bytes'])
            entry['peak_memory_increase_mb'] = _mb(
                memory[key]['increase_bytes'])
            entry['params'] = params
            if args.no_flops:
                entry.update(flops=None, gflops=None)
            else:
                fl = count_flops(m['model'], mode, args.shape, device)
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
    base = next((r for r in results if r['role'] == 'baseline'), None)
    if base is not None:
        base_t = np.asarray(base['times_ms'])
        for r in results:
            if r['role'] != 'model':
                continue
            t = np.asarray(r['times_ms'])
            overhead.append(
                dict(
                    mode=r['mode'],
                    ratio=round(r['median_ms'] / base['median_ms'], 4),
                    ms=round(r['median_ms'] - base['median_ms'], 3),
                    paired_median_ms=round(float(np.median(t - base_t)), 3)))

    primary_mode = 'streaming' if 'streaming' in models['model'][
        'modes'] else models['model']['modes'][0]
    primary = next(r for r in results
                   if r['role'] == 'model' and r['mode'] == primary_mode)
    gpu = (torch.cuda.get_device_name(device)
           if device.type == 'cuda' else None)
    return dict(
        kind='lma_mmseg.benchmark',
        device=str(device),
        device_name=gpu or platform.processor() or platform.machine(),
        torch=torch.__version__,
        cpu_threads=torch.get_num_threads(),
        shape=list(args.shape),
        frames=args.frames,
        warmup=args.warmup,
        input=input_desc,
        interleaved=True,
        memory_measure=memory_measure,
        fps_definition='1000 / mean ms per frame',
        flops_definition='mmengine FlopAnalyzer, 1 multiply-add = 1 FLOP',
        model=dict(
            config=args.config,
            checkpoint=args.checkpoint,
            params=models['model']['params'],
            **describe_model(models['model']['cfg'].model)),
        baseline=None if not args.baseline else dict(
            config=args.baseline,
            checkpoint=args.baseline_checkpoint,
            params=models['baseline']['params'],
            **describe_model(models['baseline']['cfg'].model)),
        results=results,
        overhead=overhead,
        primary=_summary(primary))


PRIMARY_KEYS = ('mode', 'median_ms', 'p90_ms', 'mean_ms', 'fps',
                'peak_memory_mb', 'params', 'gflops')


def _summary(result: dict) -> dict:
    return {k: result[k] for k in PRIMARY_KEYS}


def baseline_report(res: dict) -> dict:
    """The baseline's part of an interleaved run, shaped as a benchmark of
    the baseline alone (its timings were taken in the same run as the
    model's, so the two are comparable)."""
    results = [dict(r, role='model') for r in res['results']
               if r['role'] == 'baseline']
    return dict(
        res,
        model=res['baseline'],
        baseline=None,
        results=results,
        overhead=[],
        primary=_summary(results[0]),
        interleaved_with=res['model']['config'])


def print_report(res: dict) -> str:
    table = PrettyTable()
    table.field_names = [
        'model', 'mode', 'median ms', 'p90 ms', 'mean ms', 'FPS',
        'peak mem MB', 'frame mem MB', 'params M', 'GFLOPs'
    ]
    for r in res['results']:
        cfg = res[r['role']]['config']
        table.add_row([
            f'{r["role"]}: {osp.basename(cfg)}', r['mode'], r['median_ms'],
            r['p90_ms'], r['mean_ms'], r['fps'], r['peak_memory_mb'],
            r['peak_memory_increase_mb'],
            round(r['params'] / 1e6, 3),
            '-' if r.get('gflops') is None else r['gflops']
        ])
    lines = [
        f'device {res["device"]} ({res["device_name"]}), input '
        f'{res["input"]}, {res["warmup"]} warm-up + {res["frames"]} timed '
        'frames, interleaved',
        table.get_string(),
        'peak mem MB: peak during a frame; frame mem MB: its increase over '
        f'the usage before the frame. {res["memory_measure"]}'
    ]
    for o in res['overhead']:
        lines.append(f'overhead of {o["mode"]} over the baseline: '
                     f'x{o["ratio"]:.3f}, {o["ms"]:+.2f} ms/frame (median), '
                     f'{o["paired_median_ms"]:+.2f} ms (median of paired '
                     'frame differences)')
    text = '\n'.join(lines)
    print(text)
    return text


def main(argv=None) -> dict:
    args = parse_args(argv)
    import lma_mmseg  # noqa: F401  (registers the components)
    res = benchmark(args)
    print_report(res)
    if args.out:
        atomic_write_json(args.out, res)
        print(f'results written to {args.out}')
    if args.baseline_out:
        atomic_write_json(args.baseline_out, baseline_report(res))
        print(f'baseline results written to {args.baseline_out}')
    return res


if __name__ == '__main__':
    main()
    sys.exit(0)
