# Copyright (c) lma_mmseg contributors. All rights reserved.
"""A temporal benchmark suite on synthetic video.

A single-frame model (``configs/demo/erfnet_demo.py``) is trained once on
clean video of the generator (severity 0). Then, for every degradation
mode of the generator (:mod:`lma_mmseg.datasets.synthetic`) on the same
scenes, each LMA variant (``configs/demo/lma-erfnet_demo-light.py``, the
former demo recipe, with overrides) and the single-frame *twin* (the
single-frame model trained on at the LMA learning rate) start from that
checkpoint and train the same number of iterations on the mode's data, so
every model of a row has the same total training budget
(``shared_base=False`` trains the single-frame model on every mode's data
instead). Every model is evaluated on the mode's val split at the end of
its training (mIoU), and each variant is timed once, frame by frame at the
suite's frame size, against the single-frame model (``tools/benchmark.py``,
interleaved). The configs are loaded once at the start, so editing them
while a suite runs does not change its runs.

Training and timing run as child processes of the repository's
``tools/train.py`` and ``tools/benchmark.py`` (one process per run, so runs
do not share state); every run keeps its config, log and result under
``work_dir/runs/{mode}/{name}/``. A finished run is not run again when the
suite is restarted with the same work dir and settings (``result.json`` is
written last), so an interrupted suite resumes.

Outputs (written atomically): ``suite.json`` (settings and rows),
``suite.md`` (the table) and ``suite.png`` (grouped bars of the gain over
the single-frame twin per mode and variant).

Example::

    from lma_mmseg.evaluation.temporal_suite import run_suite
    run_suite('work_dirs/temporal_suite', modes=['blur'],
              variants=['light', 'residual'], iters=(400, 200))
"""
import copy
import inspect
import io
import json
import os
import os.path as osp
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..fileio import atomic_write_bytes, atomic_write_text

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BASE_CONFIG = osp.join(ROOT, 'configs', 'demo', 'erfnet_demo.py')
# the former demo recipe (window 7, light fusion): the variants' reference
LMA_CONFIG = osp.join(ROOT, 'configs', 'demo', 'lma-erfnet_demo-light.py')

# Generator settings of each suite mode (arguments of make_demo_data).
SUITE_MODES: Dict[str, dict] = {
    'glare': dict(mode='glare'),
    'occlusion': dict(mode='occlusion'),
    'blur': dict(mode='blur'),
    'noise': dict(mode='noise'),
    'dropout': dict(mode='dropout'),
    # glare/fog over whole regions, with extra objects moving through the
    # scene at several speeds, two of them small and static
    'motion': dict(mode='glare', speeds=(0, 0, 2, 4, 8)),
}
DEFAULT_MODES = ('glare', 'occlusion', 'blur', 'noise', 'dropout', 'motion')

PRIOR_KEY = 'neck.position_bias'
_PAPER_FUSION = {
    'model.neck.fusion.gate_channels': 128,
    'model.neck.fusion.proj_kernel_size': 3,
    'model.neck.fusion.proj_bias': True,
}


def _variant(desc: str,
             paper: bool = False,
             residual: bool = False,
             window: Optional[int] = None,
             encoder: Optional[str] = None,
             prior_lr_mult: Optional[float] = None,
             neck_lr_mult: Optional[float] = None) -> dict:
    """One LMA variant: its description, the config overrides (merged into
    ``lma-erfnet_demo-light.py``) and the model arguments it needs.

    Args:
        desc (str): What the variant is.
        paper (bool): The paper's fusion (per-channel gates, biased 3x3
            projections) instead of the light one.
        residual (bool): Identity at init (``feat + alpha * fusion``).
        window (int, optional): Attention window (the config's 7 if None).
        encoder (str, optional): None keeps the encoder frozen;
            ``'follow'`` trains it too with memory frames encoded in its
            train mode; ``'eval'`` trains it too with memory frames encoded
            as at inference (``memory_encoder_mode='eval'``).
        prior_lr_mult (float, optional): Add the learned position prior
            with this learning-rate multiplier.
        neck_lr_mult (float, optional): Learning-rate multiplier of the
            neck's new layers (memory heads, fusion).
    """
    options, needs, custom_keys = {}, [], {}
    if paper:
        options.update(_PAPER_FUSION)
    if residual:
        options['model.neck.residual'] = True
    if window is not None:
        options['model.neck.window'] = window
    if encoder is not None:
        options['model.freeze'] = None
        if encoder == 'eval':
            options['model.memory_encoder_mode'] = 'eval'
            needs.append('memory_encoder_mode')
    if neck_lr_mult is not None:
        custom_keys['neck'] = dict(lr_mult=neck_lr_mult)
    if prior_lr_mult is not None:
        options['model.neck.position_bias'] = True
        custom_keys[PRIOR_KEY] = dict(lr_mult=prior_lr_mult)
        needs.append('position_bias')
    if custom_keys:
        options['optim_wrapper.paramwise_cfg'] = dict(custom_keys=custom_keys)
    return dict(desc=desc, options=options, needs=tuple(needs))


_ENC_EVAL = ('the encoder trained too, memory frames encoded as at '
             'inference (eval-mode BN, no gradient)')
VARIANTS: Dict[str, dict] = {
    'light': _variant('demo fusion (one gate per pixel, 1x1 bias-free '
                      'projections), window 7'),
    'paper': _variant('paper fusion (per-channel gates, 3x3 biased '
                      'projections), window 7', paper=True),
    'residual': _variant('light fusion, residual identity-at-init (feat + '
                         'alpha * fusion, alpha = 0 at start), window 7',
                         residual=True),
    'residual-prior': _variant('residual + learned position prior (lr x100 '
                               'on the prior)', residual=True,
                               prior_lr_mult=100),
    'residual-prior-lr1': _variant('residual + learned position prior (lr '
                                   'x1 on the prior)', residual=True,
                                   prior_lr_mult=1),
    'residual-w3': _variant('residual, window 3', residual=True, window=3),
    'residual-w3-prior': _variant('residual, window 3, learned position '
                                  'prior (lr x100 on the prior)',
                                  residual=True, window=3, prior_lr_mult=100),
    'residual-w3-full': _variant('residual, window 3, the encoder trained '
                                 'too (freeze=None, as the single-frame '
                                 'twin), memory frames encoded in train '
                                 'mode', residual=True, window=3,
                                 encoder='follow'),
    'residual-w3-full-prior': _variant('residual-w3-full + learned position '
                                       'prior (lr x100 on the prior)',
                                       residual=True, window=3,
                                       encoder='follow', prior_lr_mult=100),
    'residual-w3-enc': _variant(f'residual, window 3, {_ENC_EVAL}',
                                residual=True, window=3, encoder='eval'),
    'residual-w3-enc-prior': _variant('residual-w3-enc + learned position '
                                      'prior (lr x100 on the prior)',
                                      residual=True, window=3,
                                      encoder='eval', prior_lr_mult=100),
    'residual-w7-enc-prior': _variant(f'residual, window 7, {_ENC_EVAL}, '
                                      'learned position prior (lr x100)',
                                      residual=True, window=7,
                                      encoder='eval', prior_lr_mult=100),
    'residual-w3-enc-prior-neck10': _variant(
        'residual-w3-enc-prior with lr x10 on the neck\'s new layers',
        residual=True, window=3, encoder='eval', prior_lr_mult=100,
        neck_lr_mult=10),
    'paper-residual-w3-enc-prior': _variant(
        'paper fusion, residual, window 3, encoder trained with memory '
        'frames encoded as at inference, position prior (lr x100)',
        paper=True, residual=True, window=3, encoder='eval',
        prior_lr_mult=100),
    'light-w3': _variant('light fusion, window 3', window=3),
    'paper-residual': _variant('paper fusion, residual identity-at-init, '
                               'window 7', paper=True, residual=True),
    'paper-residual-prior': _variant('paper fusion, residual, position '
                                     'prior (lr x100)', paper=True,
                                     residual=True, prior_lr_mult=100),
}
DEFAULT_VARIANTS = (
    'light', 'paper', 'residual', 'residual-prior', 'residual-w3')


def model_arguments() -> Tuple[str, ...]:
    """Arguments that this checkout's ``LocalMemoryNeck`` and
    ``VideoEncoderDecoder`` accept."""
    from ..models.necks import LocalMemoryNeck
    from ..models.segmentors import VideoEncoderDecoder
    return tuple(
        name for cls in (LocalMemoryNeck, VideoEncoderDecoder)
        for name in inspect.signature(cls.__init__).parameters)


def available(variant: str) -> bool:
    """Whether this checkout's neck and segmentor support ``variant``."""
    needs = VARIANTS[variant].get('needs', ())
    args = model_arguments()
    return all(n in args for n in needs)


def _set_crop(pipeline: list, crop: Tuple[int, int]) -> None:
    for t in pipeline:
        if t.get('type') == 'RandomCrop':
            t['crop_size'] = crop
        if 'transforms' in t:
            _set_crop(t['transforms'], crop)


def build_config(
        base: str,
        data_root: str,
        size: Tuple[int, int],
        iters: int,
        load_from: Optional[str] = None,
        lr: Optional[float] = None,
        options: Optional[dict] = None,
        workers: int = 1):
    """A demo config set up for one suite run.

    Args:
        base (str | Config): Config file (a demo config), or a config
            loaded once (copied, so every run of a suite starts from the
            same text even when the file changes meanwhile).
        data_root (str): The mode's data.
        size (tuple[int, int]): Frame size (H, W): whole frames are used.
        iters (int): Training iterations (one validation at the end, one
            checkpoint at the end, the poly schedule over them).
        load_from (str, optional): Checkpoint to start from.
        lr (float, optional): Learning rate (the config's when None).
        options (dict, optional): Further overrides (``merge_from_dict``).
        workers (int): Data loader workers for training.

    Returns:
        mmengine.Config
    """
    from mmengine.config import Config
    if isinstance(base, Config):
        cfg = copy.deepcopy(base)
    else:
        cfg = Config.fromfile(base)
    size = (int(size[0]), int(size[1]))
    for split in ('train', 'val', 'test'):
        loader = cfg[f'{split}_dataloader']
        loader.dataset.data_root = data_root
        if split == 'train':
            loader.num_workers = workers
            loader.persistent_workers = workers > 0
        else:
            loader.num_workers = 0
            loader.persistent_workers = False
    _set_crop(cfg.train_dataloader.dataset.pipeline, size)
    cfg.model.data_preprocessor.size = size
    cfg.data_preprocessor = cfg.model.data_preprocessor
    cfg.train_cfg.max_iters = iters
    cfg.train_cfg.val_interval = iters
    for sched in cfg.param_scheduler:
        sched['end'] = iters
    cfg.default_hooks.checkpoint.interval = iters
    cfg.default_hooks.logger.interval = max(1, min(50, iters // 4))
    cfg.load_from = load_from
    if lr is not None:
        cfg.optim_wrapper.optimizer.lr = lr
    if options:
        cfg.merge_from_dict(copy.deepcopy(options))
    return cfg


def read_miou(work_dir: str) -> float:
    """The last validation mIoU logged under ``work_dir`` (mmengine's
    ``vis_data/scalars.json``)."""
    found = []
    for stamp in sorted(os.listdir(work_dir)):
        path = osp.join(work_dir, stamp, 'vis_data', 'scalars.json')
        if osp.isfile(path):
            with open(path) as f:
                for line in f:
                    line = line.strip()
                    if line:
                        entry = json.loads(line)
                        if 'mIoU' in entry:
                            found.append(float(entry['mIoU']))
    if not found:
        raise RuntimeError(
            f'no validation mIoU was logged under {work_dir} '
            '(vis_data/scalars.json)')
    return found[-1]


def _run(cmd: List[str], log: str, env: Optional[dict] = None) -> float:
    """Run a child process with its output in ``log``; return seconds."""
    start = time.perf_counter()
    os.makedirs(osp.dirname(log), exist_ok=True)
    with open(log, 'w') as f:
        proc = subprocess.run(
            cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        with open(log) as f:
            tail = f.read()[-3000:]
        raise RuntimeError(
            f'{" ".join(cmd)} failed with exit status '
            f'{proc.returncode}; log {log}:\n{tail}')
    return time.perf_counter() - start


def _load_result(path: str, settings: dict) -> Optional[dict]:
    if not osp.isfile(path):
        return None
    with open(path) as f:
        result = json.load(f)
    return result if result.get('settings') == settings else None


def train_run(
        name: str,
        run_dir: str,
        cfg,
        settings: dict,
        env: Optional[dict] = None) -> dict:
    """Train one config in a child process (``tools/train.py``) unless a
    finished run with the same settings is there; return its result
    (``miou``, ``checkpoint``, ``seconds``)."""
    result_path = osp.join(run_dir, 'result.json')
    # as stored in result.json (tuples become lists), so a finished run
    # compares equal
    settings = json.loads(json.dumps(dict(settings, config=cfg.pretty_text)))
    done = _load_result(result_path, settings)
    if done is not None:
        done['reused'] = True
        return done
    os.makedirs(run_dir, exist_ok=True)
    cfg_path = osp.join(run_dir, f'{name}.py')
    atomic_write_text(cfg_path, cfg.pretty_text)
    train_dir = osp.join(run_dir, 'train')
    seconds = _run(
        [
            sys.executable,
            osp.join(ROOT, 'tools', 'train.py'), cfg_path, '--work-dir',
            train_dir
        ], osp.join(run_dir, 'train.log'), env)
    ckpt = osp.join(train_dir, f'iter_{cfg.train_cfg.max_iters}.pth')
    if not osp.isfile(ckpt):
        raise RuntimeError(f'{name}: training wrote no checkpoint {ckpt}')
    result = dict(
        name=name,
        miou=read_miou(train_dir),
        checkpoint=ckpt,
        config=cfg_path,
        seconds=round(seconds, 1),
        settings=settings)
    atomic_write_text(result_path, json.dumps(result, indent=2))
    result['reused'] = False
    return result


def time_run(
        lma_cfg: str,
        lma_ckpt: str,
        base_cfg: str,
        base_ckpt: str,
        size: Tuple[int, int],
        out: str,
        frames: int,
        warmup: int,
        env: Optional[dict] = None) -> dict:
    """ms/frame of an LMA model (streaming) and of the single-frame model,
    interleaved (``tools/benchmark.py``)."""
    if not osp.isfile(out):
        _run(
            [
                sys.executable,
                osp.join(ROOT, 'tools',
                         'benchmark.py'), lma_cfg, '--checkpoint', lma_ckpt,
                '--baseline', base_cfg, '--baseline-checkpoint', base_ckpt,
                '--device', 'cpu', '--shape',
                str(size[0]),
                str(size[1]), '--frames',
                str(frames), '--warmup',
                str(warmup), '--modes', 'streaming', '--no-flops', '--out', out
            ], out[:-len('.json')] + '.log', env)
    with open(out) as f:
        res = json.load(f)
    ms = {r['role']: r['median_ms'] for r in res['results']}
    return dict(lma_ms=ms['model'], single_ms=ms['baseline'])


def render_table(
        rows: List[dict], modes: Sequence[str],
        variants: Sequence[str]) -> str:
    """Markdown table: one row per (mode, model)."""
    lines = [
        '| mode | model | mIoU | gain over single-frame twin | ms/frame |',
        '|---|---|---:|---:|---:|'
    ]
    for row in rows:
        gain = row.get('gain')
        miou = row.get('miou')
        ms = row.get('ms')
        lines.append(
            '| {} | {} | {} | {} | {} |'.format(
                row['mode'], row['model'], '-' if miou is
                None else f'{miou:.2f}', '-' if gain is
                None else f'{gain:+.2f}', '-' if ms is None else f'{ms:.1f}') +
            (f' {row["note"]}' if row.get('note') else ''))
    # per variant: worst and mean gain over the modes
    summary = [
        '', '| variant | min gain | mean gain | modes |',
        '|---|---:|---:|---:|'
    ]
    for v in variants:
        gains = [
            r['gain'] for r in rows
            if r['model'] == v and r.get('gain') is not None
        ]
        if gains:
            summary.append(
                f'| {v} | {min(gains):+.2f} | '
                f'{sum(gains) / len(gains):+.2f} | {len(gains)} |')
        else:
            summary.append(f'| {v} | - | - | 0 |')
    return '\n'.join(lines + summary) + '\n'


def render_plot(
        rows: List[dict], modes: Sequence[str], variants: Sequence[str],
        title: str) -> bytes:
    """PNG bytes: grouped bars of the gain over the single-frame twin, one
    group per mode, one bar per variant."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    gains = {(r['mode'], r['model']): r.get('gain') for r in rows}
    fig, ax = plt.subplots(
        figsize=(
            min(16.0,
                max(6.0,
                    1.3 * len(modes) * max(1, len(variants)) / 3 + 3)), 4.5))
    colours = plt.get_cmap('tab20' if len(variants) > 10 else 'tab10')
    width = 0.8 / max(1, len(variants))
    x = np.arange(len(modes))
    for i, v in enumerate(variants):
        vals = [gains.get((m, v)) for m in modes]
        heights = [0.0 if g is None else g for g in vals]
        bars = ax.bar(
            x + (i - (len(variants) - 1) / 2) * width,
            heights,
            width,
            label=v,
            color=colours(i % colours.N))
        for bar, g in zip(bars, vals):
            if g is None:
                bar.set_hatch('//')
                bar.set_alpha(0.3)
    ax.axhline(0, color='black', linewidth=0.8)
    ax.axhline(3, color='grey', linewidth=0.8, linestyle='--')
    ax.set_xticks(x)
    ax.set_xticklabels(modes)
    ax.set_ylabel('mIoU gain over single-frame twin')
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=100)
    plt.close(fig)
    return buf.getvalue()


def run_suite(
        work_dir: str,
        modes: Sequence[str] = DEFAULT_MODES,
        variants: Sequence[str] = DEFAULT_VARIANTS,
        iters: Tuple[int, int] = (400, 200),
        size: Tuple[int, int] = (64, 128),
        severity: float = 1.0,
        num_train: int = 60,
        num_val: int = 20,
        seed: int = 0,
        bench_frames: int = 30,
        bench_warmup: int = 5,
        workers: int = 1,
        shared_base: bool = True,
        tune_seed: Optional[int] = None,
        log: Callable[[str], None] = print) -> dict:
    """Run the suite and write ``suite.{json,md,png}`` in ``work_dir``.

    Args:
        work_dir (str): Output folder (data, runs, table, plot).
        modes (Sequence[str]): Keys of ``SUITE_MODES``.
        variants (Sequence[str]): Keys of ``VARIANTS``. A variant this
            checkout's neck does not support gets rows marked
            ``unavailable``.
        iters (tuple[int, int]): Iterations of the single-frame training
            and of every fine-tuning (LMA variants and the single-frame
            twin).
        size (tuple[int, int]): Frame size (H, W) of the generated data.
        severity (float): Severity of every mode's degradation.
        num_train, num_val (int): Snippets per split.
        seed (int): Data seed.
        bench_frames, bench_warmup (int): Timed and warm-up frames of the
            ms/frame measurement (0 frames: no timing).
        workers (int): Training data loader workers.
        shared_base (bool): Train the single-frame model once, on clean
            video of the same scenes (severity 0), and start every mode's
            runs from it; False trains it on every mode's data.
        tune_seed (int, optional): Training seed (``randomness.seed``) of
            the twin and the variants, to repeat their runs with another
            seed from the same single-frame model; they are kept in
            ``runs/{mode}/{name}-seed{tune_seed}`` of the same ``work_dir``.
            None keeps the configs' seed.
        log (callable): Progress output.

    Returns:
        dict: What ``suite.json`` holds.
    """
    for m in modes:
        if m not in SUITE_MODES:
            raise ValueError(
                f'unknown mode {m!r}; modes: '
                f'{", ".join(SUITE_MODES)}')
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(
                f'unknown variant {v!r}; variants: '
                f'{", ".join(VARIANTS)}')
    if len(iters) != 2 or min(iters) < 1:
        raise ValueError(
            f'iters must be two positive numbers (single-frame, '
            f'fine-tuning), got {iters}')
    if len(modes) == 0 or len(variants) == 0:
        raise ValueError('at least one mode and one variant are needed')
    base_iters, tune_iters = int(iters[0]), int(iters[1])
    size = (int(size[0]), int(size[1]))
    os.makedirs(work_dir, exist_ok=True)
    env = dict(os.environ)
    env.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (ROOT, env.get('PYTHONPATH')) if p)
    from mmengine.config import Config

    # loaded once: every run starts from the configs as they were now
    base_template = Config.fromfile(BASE_CONFIG)
    lma_template = Config.fromfile(LMA_CONFIG)
    lma_lr = lma_template.optim_wrapper.optimizer.lr
    usable = [v for v in variants if available(v)]
    settings = dict(
        shared_base=shared_base,
        iters=[base_iters, tune_iters],
        size=list(size),
        severity=severity,
        num_train=num_train,
        num_val=num_val,
        seed=seed)
    # the fine-tuning runs' seed; the single-frame start keeps the config's
    tune = {} if tune_seed is None else {'randomness.seed': int(tune_seed)}
    report = settings if tune_seed is None else dict(
        settings, tune_seed=int(tune_seed))
    # runs with another seed sit next to the others: runs/{mode}/{name}-seedN
    run_suffix = '' if tune_seed is None else f'-seed{int(tune_seed)}'
    base_runs = 1 if shared_base else len(modes)
    runs_total = len(modes) * (1 + len(usable)) + base_runs
    done_runs = 0
    clean_miou = None
    start = time.perf_counter()
    rows = []
    timings: Dict[str, dict] = {}
    base = None
    for mode in (['clean'] if shared_base else []) + list(modes):
        data_root = osp.join(work_dir, 'data', mode)
        gen = dict(
            SUITE_MODES.get(mode, dict(mode='glare')),
            severity=0.0 if mode == 'clean' else severity)
        _ensure_data(data_root, gen, size, seed, num_train, num_val, log, mode)
        if mode == 'clean':
            base_cfg = build_config(
                base_template, data_root, size, base_iters, workers=workers)
            base = train_run(
                'single-frame',
                osp.join(work_dir, 'runs', 'clean', 'single-frame'), base_cfg,
                dict(settings, mode='clean', generator=gen), env)
            done_runs = 1
            log(
                f'[1/{runs_total}] single-frame on clean video: mIoU '
                f'{base["miou"]:.2f} on clean val ({_how(base)})')
            clean_miou = base['miou']
            continue
        mode_dir = osp.join(work_dir, 'runs', mode)
        mode_settings = dict(settings, mode=mode, generator=gen, **tune)

        def progress(what: str, res: dict) -> None:
            nonlocal done_runs
            done_runs += 1
            elapsed = time.perf_counter() - start
            log(
                f'[{done_runs}/{runs_total}] {mode} {what}: mIoU '
                f'{res["miou"]:.2f} ({_how(res)}; suite '
                f'{elapsed / 60:.1f} min)')

        if not shared_base:
            base_cfg = build_config(
                base_template, data_root, size, base_iters, workers=workers)
            base = train_run(
                'single-frame', osp.join(mode_dir, 'single-frame'), base_cfg,
                mode_settings, env)
            progress('single-frame', base)
        twin_cfg = build_config(
            base_template,
            data_root,
            size,
            tune_iters,
            load_from=base['checkpoint'],
            lr=lma_lr,
            options=tune,
            workers=workers)
        twin = train_run(
            'single-frame-twin',
            osp.join(mode_dir, 'single-frame-twin' + run_suffix),
            twin_cfg, mode_settings, env)
        progress('single-frame twin', twin)
        if not shared_base:
            rows.append(
                dict(
                    mode=mode,
                    model='single-frame',
                    miou=base['miou'],
                    iters=base_iters,
                    note=''))
        rows.append(
            dict(
                mode=mode,
                model='single-frame-twin',
                miou=twin['miou'],
                iters=base_iters + tune_iters,
                note=''))
        for v in variants:
            if v not in usable:
                rows.append(
                    dict(
                        mode=mode,
                        model=v,
                        miou=None,
                        gain=None,
                        note='(unavailable: the model lacks '
                        f'{", ".join(VARIANTS[v].get("needs", ()))})'))
                continue
            cfg = build_config(
                lma_template,
                data_root,
                size,
                tune_iters,
                load_from=base['checkpoint'],
                options=dict(VARIANTS[v]['options'], **tune),
                workers=workers)
            res = train_run(v, osp.join(mode_dir, v + run_suffix), cfg,
                            mode_settings, env)
            progress(v, res)
            if bench_frames > 0 and v not in timings:
                timings[v] = time_run(
                    res['config'], res['checkpoint'], base['config'],
                    base['checkpoint'], size,
                    osp.join(mode_dir, v + run_suffix, 'benchmark.json'),
                    bench_frames,
                    bench_warmup, env)
                log(
                    f'    {v}: {timings[v]["lma_ms"]:.1f} ms/frame '
                    f'(single-frame {timings[v]["single_ms"]:.1f})')
            rows.append(
                dict(
                    mode=mode,
                    model=v,
                    miou=res['miou'],
                    gain=round(res['miou'] - twin['miou'], 2),
                    iters=base_iters + tune_iters,
                    note=''))
            if not shared_base:
                rows[-1]['gain_over_start'] = round(
                    res['miou'] - base['miou'], 2)
        single_ms = [t['single_ms'] for t in timings.values()]
        for row in rows:
            if row['model'] in timings:
                row['ms'] = timings[row['model']]['lma_ms']
            elif row['model'].startswith('single-frame') and single_ms:
                row['ms'] = sorted(single_ms)[len(single_ms) // 2]
        write_outputs(
            work_dir, rows, modes, variants, report, timings,
            time.perf_counter() - start, clean_miou)
    total = time.perf_counter() - start
    log(f'suite done in {total / 60:.1f} min')
    return write_outputs(
        work_dir, rows, modes, variants, report, timings, total, clean_miou)


def _how(res: dict) -> str:
    return 'reused' if res.get('reused') else f'{res["seconds"]:.0f} s'


def _ensure_data(
        data_root: str, gen: dict, size: Tuple[int, int], seed: int,
        num_train: int, num_val: int, log: Callable[[str],
                                                    None], mode: str) -> None:
    """Generate a mode's data unless the same data is there."""
    from ..datasets.synthetic import make_demo_data
    meta_path = osp.join(data_root, 'meta.json')
    if osp.isfile(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        want = dict(
            size=list(size),
            seed=seed,
            mode=gen['mode'],
            severity=float(gen['severity']),
            speeds=None if gen.get('speeds') is None else
            [float(v) for v in gen['speeds']])
        if all(meta.get(k) == v for k, v in want.items()) and \
                meta['splits']['train']['snippets'] == num_train and \
                meta['splits']['val']['snippets'] == num_val:
            return
    log(f'[{mode}] generating data in {data_root}')
    make_demo_data(
        data_root,
        size=size,
        seed=seed,
        num_train=num_train,
        num_val=num_val,
        num_test=0,
        frames='memory',
        command=f'temporal suite, mode {mode}',
        **gen)


def write_outputs(
        work_dir: str,
        rows: List[dict],
        modes: Sequence[str],
        variants: Sequence[str],
        settings: dict,
        timings: dict,
        seconds: float,
        clean_miou: Optional[float] = None) -> dict:
    """Write ``suite.json``, ``suite.md`` and ``suite.png`` (atomically)
    from the rows so far."""
    done_modes = [m for m in modes if any(r['mode'] == m for r in rows)]
    result = dict(
        kind='lma_mmseg.temporal_suite',
        settings=settings,
        clean_base_miou=clean_miou,
        modes=list(done_modes),
        variants={v: VARIANTS[v]['desc']
                  for v in variants},
        rows=rows,
        timings=timings,
        seconds=round(seconds, 1))
    h, w = settings['size']
    title = (
        f'LMA variants vs single-frame twin, synthetic video {h}x{w}, '
        f'{settings["iters"][0]}+{settings["iters"][1]} it')
    intro = f'# Temporal benchmark suite\n\n{title}\n\n'
    if clean_miou is not None:
        intro += (
            f'Every model starts from one single-frame model trained '
            f'{settings["iters"][0]} iterations on clean video (mIoU '
            f'{clean_miou:.2f} on clean val); the twin and every LMA '
            f'variant then train {settings["iters"][1]} iterations on '
            'the mode\'s data.\n\n')
    md = intro + render_table(rows, done_modes, variants)
    atomic_write_text(
        osp.join(work_dir, 'suite.json'), json.dumps(result, indent=2))
    atomic_write_text(osp.join(work_dir, 'suite.md'), md)
    atomic_write_bytes(
        osp.join(work_dir, 'suite.png'),
        render_plot(rows, done_modes, variants, title))
    return result
