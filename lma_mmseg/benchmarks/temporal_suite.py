# Copyright (c) lma_mmseg contributors. All rights reserved.
"""A temporal benchmark suite on synthetic video.

A single-frame model (``SuiteSettings.base_config``, the demo ERFNet) is
trained once on clean video of the generator (severity 0). Then, for every
degradation mode of the generator (:mod:`lma_mmseg.datasets.prep.synthetic`)
on the same scenes, each LMA variant (``SuiteSettings.lma_config``, the
former demo recipe with window 7 and the light fusion, with the overrides of
:data:`VARIANTS`) and the single-frame *twin* (the single-frame model trained
on at the LMA learning rate) start from that checkpoint and train the same
number of iterations on the mode's data, so every model of a row has the
same total training budget (``shared_base=False`` trains the single-frame
model on every mode's data instead). Every model is evaluated on the mode's
val split at the end of its training (mIoU), and each variant is timed once,
frame by frame at the suite's frame size, against the single-frame model
(:mod:`lma_mmseg.benchmarks.model_benchmark`, interleaved). The configs are
loaded once at the start, so editing them while a suite runs does not change
its runs.

Every run trains in this process with mmengine's Runner (its console output
goes to the run's ``train.log``); ``SuiteSettings.isolate`` trains each run
in a child process of its own instead (``multiprocessing``, ``spawn``), for
suites whose runs must not share a process. Every run keeps its config, log
and result under ``work_dir/runs/{mode}/{name}/``. A finished run is not run
again when the suite is restarted with the same work dir and settings
(``result.json`` is written last), so an interrupted suite resumes.

Outputs (written atomically): ``suite.json`` (settings and rows),
``suite.md`` (the table) and ``suite.png`` (grouped bars of the gain over
the single-frame twin per mode and variant).

Example::

    from lma_mmseg.benchmarks.temporal_suite import SuiteSettings, run_suite
    settings = SuiteSettings(
        base_config='erfnet_demo.py', lma_config='lma-erfnet_demo-light.py',
        modes=('blur', ), variants=('light', 'residual'), iters=(400, 200))
    run_suite('work_dirs/temporal_suite', settings)
"""
import contextlib
import copy
import dataclasses
import gc
import inspect
import io
import json
import os
import os.path as osp
import time
import traceback
import uuid
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..fileio import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = [
    'SUITE_MODES', 'DEFAULT_MODES', 'VARIANTS', 'DEFAULT_VARIANTS',
    'SuiteSettings', 'run_suite', 'load_config', 'build_config', 'train_run',
    'train_model', 'time_run', 'tc_run', 'read_miou', 'render_table',
    'render_plot', 'write_outputs', 'available', 'model_arguments',
    'mode_targets', 'tune_options', 'run_suffix', 'TARGET_GAIN',
    'TC_OFFSETS', 'MEMORY_HEAD'
]

#: Generator settings of each suite mode (fields of
#: :class:`~lma_mmseg.datasets.prep.synthetic.DemoDataSettings`).
SUITE_MODES: Dict[str, dict] = {
    # nothing degraded (severity 0): the memory must not cost accuracy
    'clean': dict(mode='glare'),
    'glare': dict(mode='glare'),
    'occlusion': dict(mode='occlusion'),
    'blur': dict(mode='blur'),
    'noise': dict(mode='noise'),
    'dropout': dict(mode='dropout'),
    # glare/fog over whole regions, with extra objects moving through the
    # scene at several speeds, two of them small and static
    'motion': dict(mode='glare', speeds=(0, 0, 2, 4, 8)),
}
DEFAULT_MODES = ('clean', 'glare', 'occlusion', 'blur', 'noise', 'dropout',
                 'motion')
#: Largest gain a degraded mode asks of a variant over its twin: +3 mIoU, or
#: half of what the twin loses to the degradation (its gap to its own
#: ``clean`` mIoU) where that is less.
TARGET_GAIN = 3.0

PRIOR_KEY = 'neck.position_bias'
RESIDUAL_KEY = 'neck.residual_scale'
KEY_GATE_KEY = 'neck.key_gate_scale'
_PAPER_FUSION = {
    'model.neck.fusion.gate_channels': 128,
    'model.neck.fusion.proj_kernel_size': 3,
    'model.neck.fusion.proj_bias': True,
}

#: The suite's head on the memory read-out (``memory_head`` variants): one
#: 3x3 conv-BN-ReLU and the classifier, as mmseg's auxiliary FCN heads.
MEMORY_HEAD = dict(
    type='FCNHead',
    channels=64,
    num_convs=1,
    concat_input=False,
    dropout_ratio=0.1,
    norm_cfg=dict(type='BN', requires_grad=True))


def _variant(desc: str,
             paper: bool = False,
             residual: bool = False,
             window: Optional[int] = None,
             encoder: Optional[str] = None,
             prior_lr_mult: Optional[float] = None,
             neck_lr_mult: Optional[float] = None,
             offsets: Optional[Tuple[int, ...]] = None,
             match_quality: Optional[str] = None,
             norm_eval: bool = False,
             memory_norm: bool = False,
             residual_lr_mult: Optional[float] = None,
             key_gate_lr_mult: Optional[float] = None,
             memory_head_weight: Optional[float] = None) -> dict:
    """One LMA variant: its description, the config overrides (merged into
    the suite's LMA config) and the model arguments it needs.

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
        offsets (tuple[int], optional): Memory frame offsets of the model
            and of every split's clips, and the neck's ``memory_length``
            (the config's consecutive ``(-3, -2, -1)`` if None).
        match_quality (str, optional): The fusion's gates see the match
            quality (``LocalMemoryNeck(match_quality=...)``).
        norm_eval (bool): The trained encoder's BN layers keep the running
            statistics of the clean single-frame start
            (``VideoEncoderDecoder(backbone_norm_eval=True)``).
        memory_norm (bool): The memory frames are normalised with the BN
            statistics of the clean start and the key frame with its own,
            fine-tuned ones
            (``VideoEncoderDecoder(memory_norm_stats='start')``).
        residual_lr_mult (float, optional): Learning-rate multiplier of the
            residual fusion's scale (``neck.residual_scale``, 0 at the
            start).
        key_gate_lr_mult (float, optional): Add the gate that lowers the key
            frame's share of the residual output
            (``LocalMemoryNeck(key_gate=True)``), with this learning-rate
            multiplier on its scale (``neck.key_gate_scale``, 0 at the
            start).
        memory_head_weight (float, optional): Add a decode head trained on
            the memory read-out alone (``VideoEncoderDecoder(memory_head=
            ...)``, :data:`MEMORY_HEAD`) with this loss weight.
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
    if residual_lr_mult is not None:
        custom_keys[RESIDUAL_KEY] = dict(lr_mult=residual_lr_mult)
    if key_gate_lr_mult is not None:
        options['model.neck.key_gate'] = True
        custom_keys[KEY_GATE_KEY] = dict(lr_mult=key_gate_lr_mult)
        needs.append('key_gate')
    if custom_keys:
        options['optim_wrapper.paramwise_cfg'] = dict(custom_keys=custom_keys)
    if offsets is not None:
        # stated once by the model; the clips of every split follow it
        options['model.memory_offsets'] = tuple(offsets)
        # one position-bias row per memory frame
        options['model.neck.memory_length'] = len(offsets)
        for split in ('train', 'val', 'test'):
            options[f'{split}_dataloader.dataset.frame_offsets'] = \
                tuple(offsets)
        needs.append('memory_offsets')
    if memory_head_weight is not None:
        options['model.memory_head'] = dict(
            MEMORY_HEAD,
            loss_decode=dict(
                type='CrossEntropyLoss', loss_weight=memory_head_weight))
        needs.append('memory_head')
    if match_quality is not None:
        options['model.neck.match_quality'] = match_quality
        needs.append('match_quality')
    if norm_eval:
        options['model.backbone_norm_eval'] = True
        needs.append('backbone_norm_eval')
    if memory_norm:
        options['model.memory_norm_stats'] = 'start'
        needs.append('memory_norm_stats')
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
    # Strided memory: the frames 6, 4 and 2 back instead of 3, 2 and 1.
    # At the suite's 64x128 frames the scenes pan about 0.75-1.75 px per
    # frame, so six frames back stays within the reach of window 3 at 1/8
    # scale (+-8 px) while the memory spans twice the time.
    'paper-residual-w3-enc-prior-strided': _variant(
        'paper-residual-w3-enc-prior with strided memory offsets '
        '(-6, -4, -2)', paper=True, residual=True, window=3,
        encoder='eval', prior_lr_mult=100, offsets=(-6, -4, -2)),
    # the fusion's gates see how well the memory matches each pixel (the
    # attention's log-normaliser)
    'paper-residual-w3-enc-prior-lse': _variant(
        'paper-residual-w3-enc-prior whose gates also see the match quality '
        '(the attention\'s log-normaliser)', paper=True, residual=True,
        window=3, encoder='eval', prior_lr_mult=100, match_quality='lse'),
    'paper-residual-w3-enc-prior-strided-lse': _variant(
        'the strided variant whose gates also see the match quality',
        paper=True, residual=True, window=3, encoder='eval',
        prior_lr_mult=100, offsets=(-6, -4, -2), match_quality='lse'),
    # The encoder's BN running statistics stay those of the clean start: the
    # memory frames (clean) are not normalised at inference with statistics
    # that drifted to the degraded key frames during fine-tuning.
    'paper-residual-w3-enc-prior-normeval': _variant(
        'paper-residual-w3-enc-prior whose encoder keeps its BN running '
        'statistics (backbone_norm_eval)', paper=True, residual=True,
        window=3, encoder='eval', prior_lr_mult=100, norm_eval=True),
    'paper-residual-w3-enc-prior-strided-normeval': _variant(
        'the strided variant whose encoder keeps its BN running statistics',
        paper=True, residual=True, window=3, encoder='eval',
        prior_lr_mult=100, offsets=(-6, -4, -2), norm_eval=True),
    # the normeval variant's fusion learning faster to lean on the memory
    # where the key frame is normalised wrong (tried on dropout only)
    'paper-residual-w3-enc-prior-normeval-neck10': _variant(
        'the normeval variant with lr x10 on the neck\'s new layers',
        paper=True, residual=True, window=3, encoder='eval',
        prior_lr_mult=100, neck_lr_mult=10, norm_eval=True),
    # Two sets of BN statistics: the memory frames (clean) keep those of the
    # clean start, the key frame's follow the mode's data, so neither side
    # is normalised with the other kind's statistics (the recipe normalises
    # the memory with the key frames', the normeval variants the key frame
    # with the clean start's)
    'paper-residual-w3-enc-prior-memnorm': _variant(
        'paper-residual-w3-enc-prior whose memory frames keep the BN '
        'statistics of the clean start (memory_norm_stats=\'start\')',
        paper=True, residual=True, window=3, encoder='eval',
        prior_lr_mult=100, memory_norm=True),
    'paper-residual-w3-enc-prior-strided-memnorm': _variant(
        'the strided variant whose memory frames keep the BN statistics of '
        'the clean start', paper=True, residual=True, window=3,
        encoder='eval', prior_lr_mult=100, offsets=(-6, -4, -2),
        memory_norm=True),
    # The residual fusion's scale starts at 0 and moves about the learning
    # rate per Adam step: after the 200 fine-tuning iterations it is still
    # 0.04-0.11 (mean over channels; the recipe's runs, seed 0), which caps
    # how much the memory can add. At lr x10 it can reach O(1).
    'paper-residual-w3-enc-prior-res10': _variant(
        'paper-residual-w3-enc-prior with lr x10 on the residual scale',
        paper=True, residual=True, window=3, encoder='eval',
        prior_lr_mult=100, residual_lr_mult=10),
    'paper-residual-w3-enc-prior-memnorm-res10': _variant(
        'the memnorm variant with lr x10 on the residual scale',
        paper=True, residual=True, window=3, encoder='eval',
        prior_lr_mult=100, memory_norm=True, residual_lr_mult=10),
    'paper-residual-w3-enc-prior-memnorm-res30': _variant(
        'the memnorm variant with lr x30 on the residual scale',
        paper=True, residual=True, window=3, encoder='eval',
        prior_lr_mult=100, memory_norm=True, residual_lr_mult=30),
    'paper-residual-w3-enc-prior-strided-memnorm-res30': _variant(
        'the strided variant with the memory\'s own BN statistics and lr x30 '
        'on the residual scale', paper=True, residual=True, window=3,
        encoder='eval', prior_lr_mult=100, offsets=(-6, -4, -2),
        memory_norm=True, residual_lr_mult=30),
    # After 200 iterations at lr x30 the residual scale is still 0.28
    # (dropout) to 0.40 (occlusion) in mean |alpha| (seed 0): the fusion's
    # own layers learning ten times faster may lean further on the memory.
    'paper-residual-w3-enc-prior-strided-memnorm-res30-neck10': _variant(
        'the strided-memnorm-res30 variant with lr x10 on the neck\'s new '
        'layers', paper=True, residual=True, window=3, encoder='eval',
        prior_lr_mult=100, neck_lr_mult=10, offsets=(-6, -4, -2),
        memory_norm=True, residual_lr_mult=30),
    # The residual output always passes the key frame's features on with
    # weight 1; the key gate can lower that share per pixel where the whole
    # frame (under-exposure) or part of it (an occluder) is degraded.
    'paper-residual-w3-enc-prior-strided-memnorm-res30-keygate': _variant(
        'the strided-memnorm-res30 variant with a gate on the key frame\'s '
        'share (lr x30 on its scale)', paper=True, residual=True, window=3,
        encoder='eval', prior_lr_mult=100, offsets=(-6, -4, -2),
        memory_norm=True, residual_lr_mult=30, key_gate_lr_mult=30),
    # The read-out only learns through the fusion, which starts at zero
    # (residual): a head on the read-out alone asks the memory heads and
    # the attention directly for a read-out that predicts the key frame's
    # labels, where the key frame is degraded too.
    'paper-residual-w3-enc-prior-strided-memnorm-res30-memhead': _variant(
        'the strided-memnorm-res30 variant with a decode head on the '
        'memory read-out (loss weight 0.4)', paper=True, residual=True,
        window=3, encoder='eval', prior_lr_mult=100, offsets=(-6, -4, -2),
        memory_norm=True, residual_lr_mult=30, memory_head_weight=0.4),
    # Six frames back, the fastest scenes have panned past window 3's reach
    # at 1/8 scale (+-8 px; 1.75 px per frame): window 5 reaches +-16 px.
    'paper-residual-w5-enc-prior-strided-memnorm-res30': _variant(
        'the strided-memnorm-res30 variant with window 5', paper=True,
        residual=True, window=5, encoder='eval', prior_lr_mult=100,
        offsets=(-6, -4, -2), memory_norm=True, residual_lr_mult=30),
    'light-w3': _variant('light fusion, window 3', window=3),
    'paper-residual': _variant('paper fusion, residual identity-at-init, '
                               'window 7', paper=True, residual=True),
    'paper-residual-prior': _variant('paper fusion, residual, position '
                                     'prior (lr x100)', paper=True,
                                     residual=True, prior_lr_mult=100),
}
DEFAULT_VARIANTS = (
    'light', 'paper', 'residual', 'residual-prior', 'residual-w3')


def _int_at_least(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or \
            value < minimum:
        raise ValueError(f'{name} must be an int >= {minimum}, got '
                         f'{value!r}')
    return value


def _names(values, known: dict, what: str) -> Tuple[str, ...]:
    if isinstance(values, str):
        raise ValueError(f'{what}s must be a sequence of names, got the '
                         f'string {values!r}')
    values = tuple(values)
    for v in values:
        if v not in known:
            raise ValueError(f'unknown {what} {v!r} in `{what}s`; {what}s: '
                             f'{", ".join(known)}')
    return values


@dataclasses.dataclass(frozen=True)
class SuiteSettings:
    """What a suite runs; checked when built (a ValueError names the
    field).

    Args:
        base_config (str): Config file of the single-frame model (the demo
            ERFNet); its training set-up is used for the single-frame start
            and its twin.
        lma_config (str): Config file of the LMA model the variants
            override (the light demo recipe, window 7); it loads nothing by
            itself here, every run starts from the single-frame checkpoint.
        modes (Sequence[str]): Keys of :data:`SUITE_MODES`.
        variants (Sequence[str]): Keys of :data:`VARIANTS`. A variant this
            checkout's neck does not support gets rows marked
            ``unavailable``.
        iters (tuple[int, int]): Iterations of the single-frame training and
            of every fine-tuning (LMA variants and the single-frame twin).
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
        tune_seeds (Sequence[int | None]): Training seeds
            (``randomness.seed``) of the twin and the variants: every cell
            is trained once per seed from the same single-frame model and
            the table gives the mean and the spread (max - min) over them.
            A seed's runs are kept in ``runs/{mode}/{name}-seed{seed}``;
            None keeps the configs' seed (``runs/{mode}/{name}``).
        tc (bool): Measure the temporal consistency (TC, the ETC protocol
            of :mod:`lma_mmseg.evaluation.temporal_consistency`) of every
            trained twin and variant on the mode's val split, streaming the
            4 frames up to the annotated one after enough frames to fill the
            memory.
        isolate (bool): Train every run in a child process of its own
            (``spawn``) instead of in this process.
    """

    base_config: str
    lma_config: str
    modes: Sequence[str] = DEFAULT_MODES
    variants: Sequence[str] = DEFAULT_VARIANTS
    iters: Tuple[int, int] = (400, 200)
    size: Tuple[int, int] = (64, 128)
    severity: float = 1.0
    num_train: int = 60
    num_val: int = 20
    seed: int = 0
    bench_frames: int = 30
    bench_warmup: int = 5
    workers: int = 1
    shared_base: bool = True
    tune_seeds: Sequence[Optional[int]] = (None, )
    tc: bool = True
    isolate: bool = False

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, 'modes', _names(self.modes, SUITE_MODES, 'mode'))
        set_(self, 'variants', _names(self.variants, VARIANTS, 'variant'))
        if not self.modes or not self.variants:
            raise ValueError('at least one mode and one variant are needed '
                             f'(`modes` {self.modes}, `variants` '
                             f'{self.variants})')
        iters = tuple(self.iters)
        if len(iters) != 2 or not all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 1
                for i in iters):
            raise ValueError(
                f'iters must be two positive ints (single-frame, '
                f'fine-tuning), got {self.iters}')
        set_(self, 'iters', iters)
        size = tuple(self.size)
        if len(size) != 2 or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 32
                for s in size):
            raise ValueError(f'size must be (H, W) with ints >= 32, got '
                             f'{self.size}')
        set_(self, 'size', size)
        if isinstance(self.severity, bool) or not isinstance(
                self.severity, (int, float)) or not 0 <= self.severity <= 1:
            raise ValueError(f'severity must be a number in [0, 1], got '
                             f'{self.severity!r}')
        for name, minimum in (('num_train', 1), ('num_val', 1), ('seed', 0),
                              ('bench_frames', 0), ('bench_warmup', 0),
                              ('workers', 0)):
            _int_at_least(getattr(self, name), name, minimum)
        if isinstance(self.tune_seeds, (str, int)):
            raise ValueError('tune_seeds must be a sequence of seeds, got '
                             f'{self.tune_seeds!r}')
        seeds = tuple(self.tune_seeds)
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError('tune_seeds must be one or more distinct seeds, '
                             f'got {self.tune_seeds!r}')
        for seed in seeds:
            if seed is not None:
                _int_at_least(seed, 'each of tune_seeds', 0)
        set_(self, 'tune_seeds', seeds)
        for name in ('base_config', 'lma_config'):
            path = getattr(self, name)
            if not isinstance(path, str) or not osp.isfile(path):
                raise FileNotFoundError(
                    f'{name}: config file {path!r} not found')

    def report(self) -> dict:
        """The settings recorded in ``suite.json`` and in every run's
        ``result.json`` (a run is reused only with the same ones)."""
        report = dict(
            shared_base=self.shared_base,
            iters=list(self.iters),
            size=list(self.size),
            severity=self.severity,
            num_train=self.num_train,
            num_val=self.num_val,
            seed=self.seed)
        if self.tune_seeds != (None, ):
            report['tune_seeds'] = list(self.tune_seeds)
        return report


def tune_options(seed: Optional[int]) -> dict:
    """Config overrides of a fine-tuning run with training seed ``seed``
    (None: the config's)."""
    return {} if seed is None else {'randomness.seed': seed}


def run_suffix(seed: Optional[int]) -> str:
    """Suffix of a fine-tuning run's folder (another seed's runs sit next
    to the others)."""
    return '' if seed is None else f'-seed{seed}'


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


def load_config(path: str):
    """A config file as an ``mmengine.Config`` whose text is not
    formatted with yapf.

    The suite writes a run's config text several times (the run's own copy,
    the settings a finished run is matched by, and the Runner's log, dump
    and checkpoint meta); formatting each costs more than a short run's
    training. ``Config.fromfile`` does not pass ``format_python_code`` on,
    hence the copy.
    """
    from mmengine.config import Config
    loaded = Config.fromfile(path)
    return Config(
        loaded.to_dict(),
        cfg_text=loaded.text,
        filename=path,
        format_python_code=False)


def _set_crop(pipeline: list, crop: Tuple[int, int]) -> None:
    for t in pipeline:
        if t.get('type') == 'RandomCrop':
            t['crop_size'] = crop
        if 'transforms' in t:
            _set_crop(t['transforms'], crop)


def build_config(
        base,
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
        cfg = load_config(base)
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


def _release_logger(experiment: str) -> None:
    """Close the handlers of the run's logger (the current MMLogger when the
    Runner got as far as making it): they write to the run's files."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    if logger.instance_name.startswith(experiment):
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()


def train_model(config: str, work_dir: str, log: str) -> None:
    """Train a config file with mmengine's Runner in this process.

    Args:
        config (str): The config file.
        work_dir (str): The Runner's work dir (checkpoints, logs,
            ``vis_data``).
        log (str): File that gets what the run writes to stdout and stderr
            (the Runner's console log); a failure's traceback ends it.
    """
    from mmengine.runner import Runner
    from mmseg.registry import RUNNERS

    import lma_mmseg  # noqa: F401  (registers the components)
    cfg = load_config(config)
    cfg.work_dir = work_dir
    # unique: runs of one suite start within the same second, and mmengine
    # keeps one logger, message hub and visualizer per name in a process
    # (a visualizer of an earlier run would write this run's scalars)
    experiment = (f'{osp.splitext(osp.basename(config))[0]}-'
                  f'{uuid.uuid4().hex[:8]}')
    cfg.experiment_name = experiment
    if cfg.get('visualizer') is not None:
        cfg.visualizer.name = experiment
    os.makedirs(osp.dirname(osp.abspath(log)), exist_ok=True)
    runner = None
    with open(log, 'w') as f, contextlib.redirect_stdout(f), \
            contextlib.redirect_stderr(f):
        try:
            if 'runner_type' in cfg:
                runner = RUNNERS.build(cfg)
            else:
                runner = Runner.from_cfg(cfg)
            runner.train()
        except BaseException:
            traceback.print_exc()
            raise
        finally:
            _release_logger(experiment)
            # the Runner holds the data loaders (and their workers)
            del runner


def _train_isolated(config: str, work_dir: str, log: str) -> None:
    """:func:`train_model` in a child process (``spawn``)."""
    import multiprocessing
    proc = multiprocessing.get_context('spawn').Process(
        target=train_model, args=(config, work_dir, log), daemon=False)
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f'the training process of {config} exited with '
                           f'status {proc.exitcode}')


def _log_tail(log: str, chars: int = 3000, limit: int = 20000) -> str:
    """The end of a run's log: its last ``chars`` characters, widened to
    start at the last traceback's header so a deep stack (long install
    paths) is not cut in the middle; never more than ``limit``."""
    if not osp.isfile(log):
        return '(no log)'
    with open(log, errors='replace') as f:
        text = f.read()
    start = len(text) - chars
    header = text.rfind('Traceback (most recent call last)')
    if header != -1:
        start = min(start, header)
    return text[max(start, len(text) - limit, 0):]


def _config_dict(text: str) -> dict:
    from mmengine.config import Config
    return Config.fromstring(text, '.py').to_dict()


def _load_result(path: str, settings: dict) -> Optional[dict]:
    """The finished run in ``path`` if it ran with ``settings``: the same
    suite settings and the same config (as text, or parsed, for a config
    written in another layout)."""
    if not osp.isfile(path):
        return None
    with open(path) as f:
        result = json.load(f)
    done = dict(result.get('settings') or {})
    want = dict(settings)
    done_text, want_text = done.pop('config', None), want.pop('config')
    if done != want or not isinstance(done_text, str):
        return None
    if done_text != want_text and \
            _config_dict(done_text) != _config_dict(want_text):
        return None
    return result


def train_run(name: str,
              run_dir: str,
              cfg,
              settings: dict,
              isolate: bool = False) -> dict:
    """Train one config (:func:`train_model`) unless a finished run with the
    same settings is in ``run_dir``; return its result.

    Args:
        name (str): The run's name (its config file is ``{name}.py``).
        run_dir (str): The run's folder: config, ``train.log``, ``train/``
            (the Runner's work dir) and ``result.json``.
        cfg (mmengine.Config): What to train.
        settings (dict): The suite settings of the run; with the config
            text, what a finished run must match to be reused.
        isolate (bool): Train in a child process of its own.

    Returns:
        dict: ``name``, ``miou`` (the last validation mIoU),
        ``checkpoint``, ``config``, ``seconds``, ``settings`` and
        ``reused``.
    """
    result_path = osp.join(run_dir, 'result.json')
    # as stored in result.json (tuples become lists), so a finished run
    # compares equal
    text = cfg.pretty_text
    settings = json.loads(json.dumps(dict(settings, config=text)))
    done = _load_result(result_path, settings)
    if done is not None:
        done['reused'] = True
        return done
    os.makedirs(run_dir, exist_ok=True)
    cfg_path = osp.join(run_dir, f'{name}.py')
    atomic_write_text(cfg_path, text)
    train_dir = osp.join(run_dir, 'train')
    log = osp.join(run_dir, 'train.log')
    start = time.perf_counter()
    try:
        (_train_isolated if isolate else train_model)(cfg_path, train_dir,
                                                      log)
    except Exception as exc:
        raise RuntimeError(f'{name}: training {cfg_path} failed ({exc}); '
                           f'log {log}:\n{_log_tail(log)}') from exc
    seconds = time.perf_counter() - start
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


def time_run(lma: dict, base: dict, size: Tuple[int, int], out: str,
             frames: int, warmup: int) -> dict:
    """ms/frame of an LMA model (streaming) and of the single-frame model,
    interleaved, on CPU (the model benchmark, in this process); the
    benchmark JSON is kept in ``out`` and reused when it is there.

    Args:
        lma (dict): The LMA run's result (``config``, ``checkpoint``).
        base (dict): The single-frame run's result.
        size (tuple[int, int]): Frame size (H, W).
        out (str): The benchmark JSON.
        frames, warmup (int): Timed and untimed frames.

    Returns:
        dict: ``lma_ms`` and ``single_ms`` (medians).
    """
    if not osp.isfile(out):
        from .model_benchmark import run_model_benchmark
        from .problem import ModelProblem
        res = run_model_benchmark(
            ModelProblem(
                lma['config'],
                checkpoint=lma['checkpoint'],
                baseline=base['config'],
                baseline_checkpoint=base['checkpoint'],
                device='cpu',
                shape=size,
                frames=frames,
                warmup=warmup,
                modes=['streaming']),
            flops=False,
            progress=False)
        atomic_write_json(out, res)
    with open(out) as f:
        res = json.load(f)
    ms = {r['role']: r['median_ms'] for r in res['results']}
    return dict(lma_ms=ms['model'], single_ms=ms['baseline'])


def _fmt(value, spec: str) -> str:
    return '-' if value is None else format(value, spec)


def mode_targets(rows: List[dict]) -> Dict[str, float]:
    """The gain each degraded mode asks of a variant: :data:`TARGET_GAIN`,
    or half of the twin's gap to its own ``clean`` mIoU where that is less
    (no target without a ``clean`` row: :data:`TARGET_GAIN`)."""
    twin = {r['mode']: r['miou'] for r in rows
            if r['model'] == 'single-frame-twin' and r.get('miou') is not None}
    clean = twin.get('clean')
    targets = {}
    for mode, miou in twin.items():
        if mode == 'clean':
            continue
        targets[mode] = TARGET_GAIN if clean is None else round(
            min(TARGET_GAIN, max(0.0, (clean - miou) / 2)), 2)
    return targets


def render_table(
        rows: List[dict], modes: Sequence[str],
        variants: Sequence[str]) -> str:
    """Markdown table: one row per (mode, model), then per variant the
    worst and mean gain over the degraded modes, the modes that reach their
    target (:func:`mode_targets`), the ``clean`` gain and the modes where
    its TC is at least the twin's."""
    lines = [
        '| mode | model | mIoU | spread | gain over twin | gain range | TC '
        '| ms/frame |', '|---|---|---:|---:|---:|---:|---:|---:|'
    ]
    for row in rows:
        gains = row.get('gains') or []
        lines.append(
            '| {} | {} | {} | {} | {} | {} | {} | {} |'.format(
                row['mode'], row['model'], _fmt(row.get('miou'), '.2f'),
                _fmt(row.get('spread'), '.2f'), _fmt(row.get('gain'), '+.2f'),
                f'{min(gains):+.2f} .. {max(gains):+.2f}'
                if len(gains) > 1 else '-', _fmt(row.get('tc'), '.2f'),
                _fmt(row.get('ms'), '.1f')) +
            (f' {row["note"]}' if row.get('note') else ''))
    targets = mode_targets(rows)
    twin_tc = {r['mode']: r.get('tc') for r in rows
               if r['model'] == 'single-frame-twin'}
    summary = [
        '', '| variant | min gain (degraded) | mean gain (degraded) | '
        'modes at target | clean gain | TC >= twin |',
        '|---|---:|---:|---:|---:|---:|'
    ]
    for v in variants:
        mine = [r for r in rows
                if r['model'] == v and r.get('gain') is not None]
        degraded = [r for r in mine if r['mode'] != 'clean']
        clean = [r['gain'] for r in mine if r['mode'] == 'clean']
        gains = [r['gain'] for r in degraded]
        at_target = sum(r['gain'] >= targets.get(r['mode'], TARGET_GAIN)
                        for r in degraded)
        tcs = [(r.get('tc'), twin_tc.get(r['mode'])) for r in mine]
        tcs = [(a, b) for a, b in tcs if a is not None and b is not None]
        summary.append('| {} | {} | {} | {} | {} | {} |'.format(
            v, f'{min(gains):+.2f}' if gains else '-',
            f'{sum(gains) / len(gains):+.2f}' if gains else '-',
            f'{at_target}/{len(degraded)}',
            f'{clean[0]:+.2f}' if clean else '-',
            f'{sum(a >= b for a, b in tcs)}/{len(tcs)}' if tcs else '-'))
    if targets:
        summary += [
            '', 'Target gain per degraded mode (+{:.0f}, or half of the '
            'twin\'s gap to its clean mIoU): {}'.format(
                TARGET_GAIN, ', '.join(f'{m} {t:+.2f}'
                                       for m, t in targets.items()))
        ]
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


def _how(res: dict) -> str:
    return 'reused' if res.get('reused') else f'{res["seconds"]:.0f} s'


def _generator(mode: str, severity: float) -> dict:
    """Generator settings of a suite mode (``'clean'``: severity 0)."""
    return dict(
        SUITE_MODES.get(mode, dict(mode='glare')),
        severity=0.0 if mode == 'clean' else severity)


def _ensure_data(data_root: str, gen: dict, settings: SuiteSettings,
                 log: Callable[[str], None], mode: str) -> None:
    """Generate a mode's data unless the same data is there."""
    from ..datasets.prep import DemoDataSettings, make_demo_data
    data = DemoDataSettings(
        size=settings.size,
        seed=settings.seed,
        num_train=settings.num_train,
        num_val=settings.num_val,
        num_test=0,
        frames='memory',
        **gen)
    meta_path = osp.join(data_root, 'meta.json')
    if osp.isfile(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        want = dict(
            size=list(data.size),
            seed=data.seed,
            mode=data.mode,
            severity=data.severity,
            speeds=None if data.speeds is None else list(data.speeds))
        if all(meta.get(k) == v for k, v in want.items()) and \
                meta['splits']['train']['snippets'] == data.num_train and \
                meta['splits']['val']['snippets'] == data.num_val:
            return
    log(f'[{mode}] generating data in {data_root}')
    make_demo_data(data_root, data, command=f'temporal suite, mode {mode}')


#: Offsets of the frames whose predictions TC compares (the annotated
#: frame and the three before it).
TC_OFFSETS = (-3, -2, -1, 0)


def tc_run(res: dict, dataset_cfg, out: str) -> float:
    """TC of a trained run (:func:`train_run`'s result) on a video split,
    streamed frame by frame as deployed; cached in ``out`` (JSON) and read
    from there when it is there.

    Args:
        res (dict): The run's result (``config``, ``checkpoint``).
        dataset_cfg (dict): A video dataset of the mode's val split.
        out (str): The JSON with the result.

    Returns:
        float: TC in percent over the frames at :data:`TC_OFFSETS`, after
        as many earlier frames as the model's memory reaches back.
    """
    if not osp.isfile(out):
        from mmseg.registry import DATASETS

        from ..apis import init_model
        from ..evaluation.temporal_consistency import \
            evaluate_temporal_consistency
        model = init_model(res['config'], res['checkpoint'], device='cpu')
        offsets = getattr(model, 'memory_offsets', None) or (0, )
        warmup = max(abs(int(o)) for o in offsets)
        dataset_cfg = copy.deepcopy(dataset_cfg)
        dataset_cfg['pipeline'] = []
        result = evaluate_temporal_consistency(
            model,
            DATASETS.build(dataset_cfg),
            offsets=TC_OFFSETS,
            warmup=warmup,
            flow='dis',
            progress=False)
        atomic_write_json(
            out,
            dict(
                TC=result['TC'],
                pairs=result['pairs'],
                snippets=result['snippets'],
                offsets=list(TC_OFFSETS),
                warmup=warmup))
    with open(out) as f:
        return float(json.load(f)['TC'])


def _mean(values: Sequence[float]) -> float:
    return round(sum(values) / len(values), 2)


class _Suite:
    """One run of the suite: its settings, the configs loaded once, the
    rows and timings so far, and the progress count."""

    def __init__(self, work_dir: str, settings: SuiteSettings,
                 log: Callable[[str], None]):
        self.work_dir = work_dir
        self.settings = settings
        self.log = log
        # loaded once: every run starts from the configs as they were now
        self.base_template = load_config(settings.base_config)
        self.lma_template = load_config(settings.lma_config)
        self.lma_lr = self.lma_template.optim_wrapper.optimizer.lr
        self.usable = [v for v in settings.variants if available(v)]
        self.run_settings = settings.report()
        self.run_settings.pop('tune_seeds', None)
        base_runs = 1 if settings.shared_base else len(settings.modes)
        self.runs_total = len(settings.modes) * len(settings.tune_seeds) * (
            1 + len(self.usable)) + base_runs
        self.done_runs = 0
        self.clean_miou = None
        self.rows: List[dict] = []
        self.timings: Dict[str, dict] = {}
        self.start = time.perf_counter()

    def config(self, template, data_root: str, iters: int, **kwargs):
        s = self.settings
        return build_config(
            template, data_root, s.size, iters, workers=s.workers, **kwargs)

    def train(self, name: str, run_dir: str, cfg, settings: dict) -> dict:
        return train_run(name, run_dir, cfg, settings, self.settings.isolate)

    def progress(self, mode: str, what: str, res: dict) -> None:
        self.done_runs += 1
        elapsed = time.perf_counter() - self.start
        tc = f', TC {res["tc"]:.2f}' if res.get('tc') is not None else ''
        self.log(f'[{self.done_runs}/{self.runs_total}] {mode} {what}: mIoU '
                 f'{res["miou"]:.2f}{tc} ({_how(res)}; suite '
                 f'{elapsed / 60:.1f} min)')

    def data(self, mode: str) -> Tuple[str, dict]:
        data_root = osp.join(self.work_dir, 'data', mode)
        gen = _generator(mode, self.settings.severity)
        _ensure_data(data_root, gen, self.settings, self.log, mode)
        return data_root, gen

    def clean_base(self) -> dict:
        """The single-frame model trained on clean video."""
        data_root, gen = self.data('clean')
        cfg = self.config(self.base_template, data_root,
                          self.settings.iters[0])
        base = self.train(
            'single-frame',
            osp.join(self.work_dir, 'runs', 'clean', 'single-frame'), cfg,
            dict(self.run_settings, mode='clean', generator=gen))
        self.done_runs = 1
        self.log(f'[1/{self.runs_total}] single-frame on clean video: mIoU '
                 f'{base["miou"]:.2f} on clean val ({_how(base)})')
        self.clean_miou = base['miou']
        return base

    def with_tc(self, res: dict, run_dir: str, data_root: str) -> dict:
        """``res`` with its TC on the mode's val split (when measured)."""
        if self.settings.tc:
            cfg = self.config(self.lma_template, data_root, 1)
            res = dict(res, tc=tc_run(res, cfg.val_dataloader.dataset,
                                      osp.join(run_dir, 'tc.json')))
        return res

    def run_mode(self, mode: str, base: Optional[dict]) -> None:
        """The twin and every variant of one mode, once per training seed
        (and the single-frame model first without a shared one); their
        rows."""
        s = self.settings
        base_iters, tune_iters = s.iters
        data_root, gen = self.data(mode)
        mode_dir = osp.join(self.work_dir, 'runs', mode)
        if base is None:
            cfg = self.config(self.base_template, data_root, base_iters)
            base = self.train(
                'single-frame', osp.join(mode_dir, 'single-frame'), cfg,
                dict(self.run_settings, mode=mode, generator=gen))
            self.progress(mode, 'single-frame', base)
            self.rows.append(
                dict(
                    mode=mode,
                    model='single-frame',
                    miou=base['miou'],
                    iters=base_iters,
                    note=''))
        twins, results = [], {v: [] for v in self.usable}
        for seed in s.tune_seeds:
            settings = dict(
                self.run_settings, mode=mode, generator=gen,
                **tune_options(seed))
            cfg = self.config(
                self.base_template,
                data_root,
                tune_iters,
                load_from=base['checkpoint'],
                lr=self.lma_lr,
                options=tune_options(seed))
            run_dir = osp.join(mode_dir, 'single-frame-twin' +
                               run_suffix(seed))
            twin = self.with_tc(
                self.train('single-frame-twin', run_dir, cfg, settings),
                run_dir, data_root)
            self.progress(mode, f'single-frame twin{run_suffix(seed)}', twin)
            twins.append(twin)
            for v in self.usable:
                results[v].append(
                    self.run_variant(v, mode, data_root, mode_dir, settings,
                                     base, seed))
        self.rows.append(
            dict(self._summary(twins), mode=mode, model='single-frame-twin',
                 iters=base_iters + tune_iters, note=''))
        for v in s.variants:
            if v not in self.usable:
                self.rows.append(
                    dict(
                        mode=mode,
                        model=v,
                        miou=None,
                        gain=None,
                        note='(unavailable: the model lacks '
                        f'{", ".join(VARIANTS[v].get("needs", ()))})'))
                continue
            row = dict(self._summary(results[v]), mode=mode, model=v,
                       iters=sum(s.iters), note='')
            gains = [round(r['miou'] - t['miou'], 2)
                     for r, t in zip(results[v], twins)]
            row.update(gain=_mean(gains), gains=gains)
            if not s.shared_base:
                row['gain_over_start'] = round(row['miou'] - base['miou'], 2)
            self.rows.append(row)

    def _summary(self, results: List[dict]) -> dict:
        """mean mIoU over the seeds' runs, their spread (max - min), the
        per-seed values and the mean TC."""
        mious = [r['miou'] for r in results]
        row = dict(
            miou=_mean(mious),
            spread=round(max(mious) - min(mious), 2),
            mious=mious,
            seeds=list(self.settings.tune_seeds))
        tcs = [r['tc'] for r in results if r.get('tc') is not None]
        if tcs:
            row.update(tc=_mean(tcs), tcs=tcs)
        return row

    def run_variant(self, v: str, mode: str, data_root: str, mode_dir: str,
                    settings: dict, base: dict,
                    seed: Optional[int]) -> dict:
        """Train (and time, once per variant) one variant with one training
        seed; its result (with its TC)."""
        s = self.settings
        cfg = self.config(
            self.lma_template,
            data_root,
            s.iters[1],
            load_from=base['checkpoint'],
            options=dict(VARIANTS[v]['options'], **tune_options(seed)))
        run_dir = osp.join(mode_dir, v + run_suffix(seed))
        res = self.with_tc(self.train(v, run_dir, cfg, settings), run_dir,
                           data_root)
        self.progress(mode, v + run_suffix(seed), res)
        if s.bench_frames > 0 and v not in self.timings:
            self.timings[v] = time_run(
                res, base, s.size, osp.join(run_dir, 'benchmark.json'),
                s.bench_frames, s.bench_warmup)
            self.log(f'    {v}: {self.timings[v]["lma_ms"]:.1f} ms/frame '
                     f'(single-frame {self.timings[v]["single_ms"]:.1f})')
        return res

    def add_times(self) -> None:
        """ms/frame of every row: the variant's own, the median of the
        single-frame timings for the single-frame rows."""
        single_ms = [t['single_ms'] for t in self.timings.values()]
        for row in self.rows:
            if row['model'] in self.timings:
                row['ms'] = self.timings[row['model']]['lma_ms']
            elif row['model'].startswith('single-frame') and single_ms:
                row['ms'] = sorted(single_ms)[len(single_ms) // 2]

    def write(self) -> dict:
        s = self.settings
        return write_outputs(self.work_dir, self.rows, s.modes, s.variants,
                             s.report(), self.timings,
                             time.perf_counter() - self.start,
                             self.clean_miou)


def run_suite(work_dir: str,
              settings: SuiteSettings,
              log: Callable[[str], None] = print) -> dict:
    """Run the suite and write ``suite.{json,md,png}`` in ``work_dir``
    (after every mode, so a partial suite has its table too).

    Args:
        work_dir (str): Output folder (data, runs, table, plot).
        settings (SuiteSettings): What to run.
        log (callable): Progress output, one line per call.

    Returns:
        dict: What ``suite.json`` holds.
    """
    if not isinstance(settings, SuiteSettings):
        raise TypeError('settings must be a SuiteSettings, got '
                        f'{type(settings).__name__}')
    os.makedirs(work_dir, exist_ok=True)
    with _frozen_heap():
        suite = _Suite(work_dir, settings, log)
        base = suite.clean_base() if settings.shared_base else None
        for mode in settings.modes:
            suite.run_mode(mode, base)
            suite.add_times()
            suite.write()
        log(f'suite done in '
            f'{(time.perf_counter() - suite.start) / 60:.1f} min')
        return suite.write()


@contextlib.contextmanager
def _frozen_heap():
    """Leave the objects that exist now (the imported libraries) out of
    garbage collection while the suite runs (:func:`gc.freeze`): every run
    calls :func:`gc.collect` several times (mmengine's dataset
    serialisation, the benchmark's memory probe), and each full collection
    of that heap costs about as much as a short run's training step."""
    if gc.get_freeze_count():  # frozen by the caller: theirs to undo
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


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
