"""What a benchmark measures, as dataclasses.

* :class:`OpProblem`: one call of the local attention op (shapes, window,
  padding, dtype, device) and its inputs;
* :class:`OpBenchmarkSettings`: which problems, implementations and how
  many runs the op benchmark times;
* :class:`ModelProblem`: a segmentor (and optionally a single-frame
  baseline) timed frame by frame;
* :class:`TimerSettings`: warm-up and timed runs of the timer.

Every field is checked when the object is made; the errors name the field.
"""
import dataclasses
import numbers
from typing import Dict, Optional, Sequence, Tuple

import torch

__all__ = [
    'DTYPES', 'PADDINGS', 'OpProblem', 'OpInputs', 'OP_SHAPES',
    'QUICK_OP_SHAPES', 'OP_METHODS', 'DEFAULT_OP_METHODS',
    'OpBenchmarkSettings', 'MODEL_MODES', 'ModelProblem', 'TimerSettings'
]

#: dtype names of the benchmarks and their torch dtypes.
DTYPES = {
    'float32': torch.float32,
    'float16': torch.float16,
    'bfloat16': torch.bfloat16,
}
#: padding modes of the op (see :func:`lma_mmseg.ops.local_attention`).
PADDINGS = ('zeros', 'mask')


def _int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or value < minimum:
        raise ValueError(f'`{name}` must be an int >= {minimum}, got '
                         f'{value!r}')
    return int(value)


def _choice(value, choices, name: str):
    if value not in choices:
        raise ValueError(f'`{name}` must be one of {list(choices)}, got '
                         f'{value!r}')
    return value


def _choices(values, choices, name: str) -> Tuple:
    if isinstance(values, str) or not values:
        raise ValueError(f'`{name}` must be a non-empty list of '
                         f'{sorted(choices)}, got {values!r}')
    bad = [v for v in values if v not in choices]
    if bad:
        raise ValueError(f'`{name}` must be a non-empty list of '
                         f'{sorted(choices)}, got {list(values)}')
    return tuple(dict.fromkeys(values))


def _device(value, name: str) -> str:
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f'`{name}` must be a device such as cpu, cuda or '
                         f'cuda:0, got {value!r}') from e
    if device.type not in ('cpu', 'cuda'):
        raise ValueError(f'`{name}` must be a cpu or cuda device, got '
                         f'{value!r}')
    return str(value)


@dataclasses.dataclass(frozen=True)
class OpInputs:
    """Random inputs of an :class:`OpProblem`.

    Attributes:
        q (Tensor): Query (B, C, H, W), scaled by ``1 / sqrt(C)`` so that
            the logits have about unit variance whatever ``C``.
        k (Tensor): Memory keys (B, T, C, H, W).
        v (Tensor): Memory values (B, T, Cv, H, W).
        grad (Tensor): Gradient of the output (B, Cv, H, W) for backward.
        bias (Tensor): A position bias (T, window * window).
    """
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    grad: torch.Tensor
    bias: torch.Tensor

    def to(self, dtype: torch.dtype) -> 'OpInputs':
        """The same values cast to ``dtype``."""
        return OpInputs(*(t.to(dtype) for t in dataclasses.astuple(self)))


@dataclasses.dataclass(frozen=True)
class OpProblem:
    """One call of the local attention op.

    Args:
        B (int): Batch size.
        C (int): Key channels of the query and the memory keys.
        Cv (int): Value channels.
        T (int): Memory frames.
        H (int): Height of the feature maps.
        W (int): Width of the feature maps.
        window (int): Odd side of the local window.
        dilation (int): Dilation of the window. Defaults to 1.
        scale (float): Factor of the dot products. Defaults to 1.0.
        padding (str): ``'zeros'`` (an outside position takes part in the
            softmax with logit 0 and value 0) or ``'mask'`` (it is left
            out). Defaults to ``'zeros'``.
        dtype (str): A key of :data:`DTYPES`. Defaults to ``'float32'``.
        device (str): ``'cpu'``, ``'cuda'`` or ``'cuda:N'``. Defaults to
            ``'cpu'``.
    """
    B: int
    C: int
    Cv: int
    T: int
    H: int
    W: int
    window: int
    dilation: int = 1
    scale: float = 1.0
    padding: str = 'zeros'
    dtype: str = 'float32'
    device: str = 'cpu'

    def __post_init__(self):
        for name in ('B', 'C', 'Cv', 'T', 'H', 'W', 'window', 'dilation'):
            _int(getattr(self, name), name)
        if self.window % 2 == 0:
            raise ValueError(f'`window` must be odd, got {self.window}')
        if isinstance(self.scale, bool) or not isinstance(
                self.scale, numbers.Real) or not self.scale > 0:
            raise ValueError(f'`scale` must be a positive number, got '
                             f'{self.scale!r}')
        _choice(self.padding, PADDINGS, 'padding')
        _choice(self.dtype, DTYPES, 'dtype')
        _device(self.device, 'device')

    @property
    def torch_dtype(self) -> torch.dtype:
        """torch.dtype: The dtype of the inputs."""
        return DTYPES[self.dtype]

    @property
    def shape(self) -> Dict[str, int]:
        """dict: ``B, C, Cv, T, H, W, window`` (the fields of a record)."""
        return {
            k: getattr(self, k)
            for k in ('B', 'C', 'Cv', 'T', 'H', 'W', 'window')
        }

    @property
    def slots(self) -> int:
        """int: Space-time positions of one softmax, ``T * window**2``."""
        return self.T * self.window**2

    def replace(self, **changes) -> 'OpProblem':
        """A copy with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)

    def inputs(self, seed: int = 0) -> OpInputs:
        """Random inputs (drawn on the CPU in float32, then moved)."""
        g = torch.Generator(device='cpu').manual_seed(seed)
        B, C, Cv, T, H, W = self.B, self.C, self.Cv, self.T, self.H, self.W
        tensors = (torch.randn(B, C, H, W, generator=g) / C**0.5,
                   torch.randn(B, T, C, H, W, generator=g),
                   torch.randn(B, T, Cv, H, W, generator=g),
                   torch.randn(B, Cv, H, W, generator=g),
                   torch.randn(T, self.window**2, generator=g))
        return OpInputs(*(t.to(self.device, self.torch_dtype)
                          for t in tensors))


#: The paper's two settings (1/8 of a 512x1024 frame).
OP_SHAPES = {
    'erfnet': OpProblem(B=1, C=16, Cv=64, T=3, H=64, W=128, window=21),
    'pspnet': OpProblem(B=1, C=128, Cv=2048, T=3, H=64, W=128, window=21),
}
#: Tiny versions of :data:`OP_SHAPES` (a smoke test).
QUICK_OP_SHAPES = {
    'erfnet': OpProblem(B=1, C=16, Cv=64, T=3, H=12, W=20, window=7),
    'pspnet': OpProblem(B=1, C=32, Cv=96, T=2, H=8, W=12, window=5),
}
#: Implementations the op benchmark can time: the op (``fused``, and
#: ``fused_bias`` with a position bias, ``fused_lse`` returning its
#: log-normaliser too) and its peers, each checked against
#: the op's output before it is timed (see
#: :mod:`lma_mmseg.benchmarks.peers`).
OP_METHODS = ('fused', 'unfused', 'reference', 'plain', 'sdpa', 'flex',
              'fused_bias', 'fused_lse')
DEFAULT_OP_METHODS = ('fused', 'unfused', 'reference', 'sdpa')


@dataclasses.dataclass(frozen=True)
class TimerSettings:
    """Runs of :class:`lma_mmseg.benchmarks.timer.Timer`.

    Args:
        repeats (int): Timed runs of each function. Defaults to 5.
        warmup (int): Untimed runs first. Defaults to 1.
        progress (bool): Show an mmengine progress bar. Defaults to False.
    """
    repeats: int = 5
    warmup: int = 1
    progress: bool = False

    def __post_init__(self):
        _int(self.repeats, 'repeats')
        _int(self.warmup, 'warmup', 0)


@dataclasses.dataclass(frozen=True)
class OpBenchmarkSettings:
    """What the op benchmark times.

    Args:
        devices (Sequence[str]): ``'cpu'``, ``'cuda'`` or ``'auto'`` (CPU,
            plus CUDA when available).
        shapes (Sequence[str]): Keys of :data:`OP_SHAPES`.
        methods (Sequence[str]): Of :data:`OP_METHODS`.
        dtypes (Sequence[str]): Keys of :data:`DTYPES`.
        repeats (int): Timed runs (median).
        ref_repeats (int): Timed runs of the (slow) reference.
        warmup (int): Untimed runs first (the check of a peer against the
            op is one more untimed run).
        max_ref_gb (float): Skip a method whose estimated memory is larger
            (or above 80% of the available memory).
        model_size (Sequence[int]): ``(H, W)`` of the ERFNet forward.
        model (bool): Also time mmseg's single-frame ERFNet forward
            (float32), interleaved with the fused op.
        quick (bool): The tiny :data:`QUICK_OP_SHAPES`.
        padding (str): Padding mode of every problem.
    """
    devices: Sequence[str] = ('auto', )
    shapes: Sequence[str] = ('erfnet', 'pspnet')
    methods: Sequence[str] = DEFAULT_OP_METHODS
    dtypes: Sequence[str] = ('float32', )
    repeats: int = 5
    ref_repeats: int = 2
    warmup: int = 1
    max_ref_gb: float = 16.0
    model_size: Sequence[int] = (512, 1024)
    model: bool = True
    quick: bool = False
    padding: str = 'zeros'

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, 'devices',
             _choices(self.devices, ('auto', 'cpu', 'cuda'), 'devices'))
        set_(self, 'shapes', _choices(self.shapes, OP_SHAPES, 'shapes'))
        set_(self, 'methods', _choices(self.methods, OP_METHODS, 'methods'))
        set_(self, 'dtypes', _choices(self.dtypes, DTYPES, 'dtypes'))
        _int(self.repeats, 'repeats')
        _int(self.ref_repeats, 'ref_repeats')
        _int(self.warmup, 'warmup', 0)
        if isinstance(self.max_ref_gb, bool) or not isinstance(
                self.max_ref_gb, numbers.Real) or not self.max_ref_gb > 0:
            raise ValueError(f'`max_ref_gb` must be a positive number, got '
                             f'{self.max_ref_gb!r}')
        set_(self, 'model_size', _size(self.model_size, 'model_size'))
        _choice(self.padding, PADDINGS, 'padding')

    def resolved_devices(self) -> Tuple[str, ...]:
        """The devices, ``'auto'`` resolved."""
        out = []
        for d in self.devices:
            if d == 'auto':
                out += ['cpu'] + (['cuda']
                                  if torch.cuda.is_available() else [])
            else:
                out.append(d)
        return tuple(dict.fromkeys(out))

    def problem(self, shape: str, dtype: str, device: str) -> OpProblem:
        """The :class:`OpProblem` of one shape name, dtype and device."""
        table = QUICK_OP_SHAPES if self.quick else OP_SHAPES
        return table[shape].replace(
            dtype=dtype, device=device, padding=self.padding)

    def as_dict(self) -> dict:
        """The settings as JSON-ready builtins."""
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()
        }


def _size(value, name: str, minimum: int = 1) -> Tuple[int, int]:
    if isinstance(value, str) or len(tuple(value)) != 2:
        raise ValueError(f'`{name}` must be (H, W), got {value!r}')
    h, w = tuple(value)
    return _int(h, f'{name}[0]', minimum), _int(w, f'{name}[1]', minimum)


#: Timing modes of a segmentor: a single-frame model, a memory model
#: streaming (each frame encoded once, ``model.step``) or re-encoding its
#: ``T + 1`` frames at every step.
MODEL_MODES = ('single', 'streaming', 'reencode')


@dataclasses.dataclass(frozen=True)
class ModelProblem:
    """A segmentor timed frame by frame.

    Args:
        config (str): Config file or ``mmseg::...`` (mmengine's hub).
        checkpoint (str, optional): Its weights (default: random; speed
            does not depend on them).
        cfg_options (dict, optional): Overrides merged into ``config``.
        baseline (str, optional): A config timed in the same run,
            interleaved; the overhead over it is reported. A single-frame
            model runs as ``single``, a memory model as ``streaming`` (e.g.
            the same model at other memory offsets, through
            ``baseline_cfg_options``).
        baseline_checkpoint (str, optional): The baseline's weights.
        baseline_cfg_options (dict, optional): Overrides merged into
            ``baseline``.
        device (str): ``cpu``, ``cuda`` or ``cuda:N``.
        shape (Sequence[int]): Input ``(H, W)``, at least 8x8.
        frames (int): Timed frames.
        warmup (int): Untimed frames first.
        modes (Sequence[str], optional): Of :data:`MODEL_MODES` (default:
            ``streaming`` and ``reencode`` for a memory model, else
            ``single``).
        dtype (str): ``float32``, or ``float16`` / ``bfloat16`` to run the
            networks under ``torch.autocast``.
        compile (bool): Also time every mode through ``torch.compile``,
            interleaved with eager.
        compile_backend (str): The ``torch.compile`` backend (one of
            ``torch.compiler.list_backends(exclude_tags=())``). Defaults to
            ``'inductor'``; ``'aot_eager'`` traces the same graphs without
            generating kernels (seconds instead of minutes on a CPU).
        frames_dir (str, optional): Folder of input images (sorted by
            name, resized to ``shape``) instead of synthetic frames.
        seed (int): Seed of the synthetic frames.
    """
    config: str
    checkpoint: Optional[str] = None
    cfg_options: Optional[dict] = None
    baseline: Optional[str] = None
    baseline_checkpoint: Optional[str] = None
    baseline_cfg_options: Optional[dict] = None
    device: str = 'cpu'
    shape: Sequence[int] = (512, 1024)
    frames: int = 200
    warmup: int = 20
    modes: Optional[Sequence[str]] = None
    dtype: str = 'float32'
    compile: bool = False
    compile_backend: str = 'inductor'
    frames_dir: Optional[str] = None
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.config, str) or not self.config:
            raise ValueError(f'`config` must be a file name or mmseg::..., '
                             f'got {self.config!r}')
        _device(self.device, 'device')
        object.__setattr__(self, 'shape', _size(self.shape, 'shape', 8))
        _int(self.frames, 'frames')
        _int(self.warmup, 'warmup', 0)
        if self.modes is not None:
            object.__setattr__(
                self, 'modes', _choices(self.modes, MODEL_MODES, 'modes'))
        _choice(self.dtype, DTYPES, 'dtype')
        _choice(self.compile_backend,
                torch.compiler.list_backends(exclude_tags=()),
                'compile_backend')
        if (self.baseline_checkpoint or self.baseline_cfg_options) and \
                not self.baseline:
            raise ValueError('`baseline_checkpoint` and '
                             '`baseline_cfg_options` need a `baseline`')
        _int(self.seed, 'seed', 0)

    @property
    def autocast_dtype(self) -> Optional[torch.dtype]:
        """torch.dtype: The autocast dtype, None for float32."""
        return None if self.dtype == 'float32' else DTYPES[self.dtype]
