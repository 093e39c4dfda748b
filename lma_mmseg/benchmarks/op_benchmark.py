"""Benchmark of the local memory attention op and its peers.

For every device, dtype and shape of :class:`~lma_mmseg.benchmarks.problem.
OpBenchmarkSettings` it times, side by side (interleaved by
:class:`~lma_mmseg.benchmarks.timer.Timer`), the forward and the
forward+backward of:

* ``fused``: the op, :func:`lma_mmseg.ops.local_attention`;
* ``fused_bias``: the op with a position bias ``(T, window**2)``;
* ``fused_lse``: the op with ``return_lse=True`` (read-out and
  log-normaliser);
* ``unfused``: :func:`lma_mmseg.ops.local_attention_unfused` (correlation
  kernel -> softmax -> aggregation kernel);
* the peers of :mod:`lma_mmseg.benchmarks.peers`: ``reference`` (the op's
  pure PyTorch reference, ``F.unfold`` + ``einsum``), ``plain`` (a loop over
  the window offsets), ``sdpa`` (``F.scaled_dot_product_attention`` with a
  dense neighbourhood mask) and ``flex`` (``torch.compile(flex_attention)``
  with a block mask; FlexAttention has no CPU backward, so on the CPU only
  its forward is timed, with the reason given).

Every method but the op itself is first checked against the op's output
(forward, and the gradients of q, k and v for forward+backward; the largest
absolute difference over the largest absolute value of the op's, at least
1, must stay within :data:`TOLERANCES`). A method that disagrees is
reported as failed and not timed. Where the op has no kernel for the dtype
(CPU: float32 only) the check is against the op in float32 on the same
(rounded) inputs.

The reference and ``sdpa`` materialise large tensors (``T * window**2``
copies of k and v; an ``H*W x T*H*W`` mask and scores); each is skipped,
with the reason and the estimate, where its estimated memory exceeds
``max_ref_gb`` or 80% of the available memory.

Peak memory comes from :class:`lma_mmseg.benchmarks.timer.MemoryProbe`
(CPU: peak resident set growth; CUDA: ``torch.cuda.max_memory_allocated``
growth), in a separate pass after the timing. In the same run mmseg's
single-frame ERFNet forward (``model_size``) is timed interleaved with the
fused op, so that the op's share of a frame is a ratio measured side by
side.

``tools/analysis/benchmark_op.py`` is the command line of
:func:`run_op_benchmark`.
"""
import gc
import os
import platform
from typing import Callable, Dict, List, Optional, Tuple

import torch

from lma_mmseg.ops import (cpu_isa, ext_available, ext_has_cuda,
                           local_attention, local_attention_reference,
                           local_attention_unfused)
from .peers import (DenseMaskAttention, FlexLocalAttention, dense_mask_bytes,
                    flex_attention_available, plain_attention)
from .problem import OpBenchmarkSettings, OpInputs, OpProblem, TimerSettings
from .timer import Timer, Timing, paired_ratio

__all__ = [
    'DESCRIPTIONS', 'OP_ITSELF', 'TOLERANCES', 'ERFNET_CONFIG',
    'reference_bytes', 'estimated_bytes', 'skip_reason', 'make_method',
    'op_output', 'check_against_op', 'bench_problem', 'run_op_benchmark'
]

#: What each method is.
DESCRIPTIONS = {
    'fused': 'the op: lma_mmseg.ops.local_attention (fused kernels)',
    'fused_bias': 'the op with a position bias (T, window**2)',
    'fused_lse': 'the op returning its log-normaliser too (return_lse=True)',
    'unfused': 'lma_mmseg.ops.local_attention_unfused: correlation kernel, '
    'softmax, aggregation kernel',
    'reference': 'the op\'s pure PyTorch reference: F.unfold of k and v, '
    'einsum, softmax, einsum',
    'plain': 'plain PyTorch: a loop over the window offsets of padded k '
    'and v',
    'sdpa': 'F.scaled_dot_product_attention over all T*H*W keys with a '
    'dense neighbourhood mask (built once); zeros padding: one extra zero '
    'key with logit log(#outside positions)',
    'flex': 'torch.compile(flex_attention) with a block mask of the window '
    '(built once); zeros padding: the same extra key',
}
#: Methods that are the op itself (not checked against it).
OP_ITSELF = ('fused', 'fused_bias', 'fused_lse')
#: Largest allowed difference to the op, relative to the largest absolute
#: value of the op's output (or gradient), at least 1.
TOLERANCES = {'float32': 1e-3, 'float16': 1e-2, 'bfloat16': 5e-2}
#: mmseg's single-frame ERFNet, timed next to the op.
ERFNET_CONFIG = 'mmseg::erfnet/erfnet_fcn_4xb4-160k_cityscapes-512x1024.py'

#: A method prepared for one problem: ``fn(q, k, v, bias)``.
Method = Callable[..., torch.Tensor]


# ----------------------------------------------------------------------
# methods and memory estimates
# ----------------------------------------------------------------------
def reference_bytes(problem: OpProblem, backward: bool) -> int:
    """Rough peak memory of the reference: unfolded k and v, einsum copies.

    Fitted on a CPU machine (B=1, C=16, Cv=64, T=3, 16x128, window 21: 1.33
    GB forward, 1.48 GB forward+backward measured).
    """
    p = problem
    slots = p.B * p.slots * p.H * p.W
    est = slots * (1.6 * (p.C + p.Cv) + 8) * p.torch_dtype.itemsize
    return int(est * (1.15 if backward else 1.0))


def estimated_bytes(method: str, problem: OpProblem,
                    backward: bool) -> Optional[int]:
    """Rough peak memory of the methods that need a lot (else None)."""
    if method == 'reference':
        return reference_bytes(problem, backward)
    if method == 'sdpa':
        return dense_mask_bytes(problem.H, problem.W, problem.T, problem.B,
                                problem.torch_dtype.itemsize, backward)
    return None


def _available_bytes(device: str) -> Optional[int]:
    if torch.device(device).type == 'cuda':
        free, _ = torch.cuda.mem_get_info(device)
        return free
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _kernel_skip(problem: OpProblem) -> str:
    """Why the compiled op cannot run ``problem`` ('' when it can)."""
    if not ext_available():
        return 'skipped: lma_mmseg._ext (the compiled op) is not built'
    if torch.device(problem.device).type == 'cpu' and \
            problem.dtype != 'float32':
        return f'skipped: the CPU kernels have no {problem.dtype}'
    return ''


def skip_reason(method: str, problem: OpProblem,
                max_ref_gb: float) -> Tuple[str, Optional[int]]:
    """Why ``method`` is not measured on ``problem`` ('' when it is) and
    its estimated memory (None when not estimated)."""
    if method in OP_ITSELF or method == 'unfused':
        reason = _kernel_skip(problem)
        if reason:
            return reason, None
    if method == 'flex':
        ok, why = flex_attention_available()
        if not ok:
            return f'skipped: {why}', None
    est = estimated_bytes(method, problem, backward=True)
    if est is not None:
        limit = max_ref_gb * 2**30
        avail = _available_bytes(problem.device)
        if avail is not None:
            limit = min(limit, 0.8 * avail)
        if est > limit:
            return (f'skipped: needs ~{est / 2**30:.1f} GB > limit '
                    f'{limit / 2**30:.1f} GB'), est
    return '', est


def make_method(method: str, problem: OpProblem) -> Method:
    """``method`` prepared for ``problem``: ``fn(q, k, v, bias)`` (``bias``
    is used by ``fused_bias`` only). ``flex`` is compiled here (after
    ``torch.compiler.reset()``, so that every problem gets kernels of its
    own shape); its first call compiles."""
    p = problem
    kwargs = dict(
        window=p.window, dilation=p.dilation, scale=p.scale,
        padding=p.padding)
    if method in ('fused', 'unfused', 'reference', 'plain'):
        fn = dict(
            fused=local_attention,
            unfused=local_attention_unfused,
            reference=local_attention_reference,
            plain=plain_attention)[method]
        return lambda q, k, v, bias: fn(q, k, v, **kwargs)
    if method == 'fused_bias':
        return lambda q, k, v, bias: local_attention(
            q, k, v, bias=bias, **kwargs)
    if method == 'fused_lse':
        return lambda q, k, v, bias: local_attention(
            q, k, v, return_lse=True, **kwargs)[0]
    peer_args = (p.H, p.W, p.T, p.window, p.dilation, p.scale, p.padding)
    if method == 'sdpa':
        peer = DenseMaskAttention(
            *peer_args, device=p.device, dtype=p.torch_dtype)
    elif method == 'flex':
        torch.compiler.reset()
        peer = FlexLocalAttention(*peer_args, device=p.device, compiled=True)
    else:
        raise ValueError(f'`method` must be one of {list(DESCRIPTIONS)}, '
                         f'got {method!r}')
    return lambda q, k, v, bias: peer(q, k, v)


# ----------------------------------------------------------------------
# checks against the op
# ----------------------------------------------------------------------
def _forward(fn: Method, x: OpInputs) -> torch.Tensor:
    with torch.no_grad():
        return fn(x.q, x.k, x.v, x.bias)


def _forward_call(fn: Method, x: OpInputs) -> Callable[[int], torch.Tensor]:
    """A timed forward of ``fn`` on ``x`` (no gradient)."""
    return lambda i: _forward(fn, x)


def _gradients(fn: Method, x: OpInputs) -> List[torch.Tensor]:
    q, k, v = (t.detach().clone().requires_grad_() for t in (x.q, x.k, x.v))
    fn(q, k, v, x.bias).backward(x.grad)
    return [q.grad, k.grad, v.grad]


def _error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest difference over the largest value of ``ref`` (at least 1)."""
    ref = ref.double()
    diff = (out.double() - ref).abs().max().item()
    return diff / max(1.0, ref.abs().max().item())


def _first_line(e: BaseException) -> str:
    """The exception's type and first sentence."""
    text = (str(e).strip().splitlines() or [''])[0]
    text = text.split('. ')[0].rstrip('.')
    return f'{type(e).__name__}: {text[:160]}'


def op_output(problem: OpProblem, x: OpInputs,
              max_ref_gb: float) -> Optional[dict]:
    """What the other methods are checked against: the op's output and
    gradients (``out``, ``grads``) and ``against`` (how they were made);
    None when neither the op nor the reference can run."""
    against, p, inputs = 'fused', problem, x
    if _kernel_skip(problem):
        p = problem.replace(dtype='float32')
        inputs = x.to(torch.float32)
        against = 'fused (float32)'
    if _kernel_skip(p):
        against = 'reference (float32)'
        if skip_reason('reference', p, max_ref_gb)[0]:
            return None
        fn = make_method('reference', p)
    else:
        fn = make_method('fused', p)
    return dict(
        against=against,
        out=_forward(fn, inputs),
        grads=_gradients(fn, inputs))


def check_against_op(fn: Method, x: OpInputs, target: dict, tol: float,
                     rec: dict) -> Tuple[bool, bool]:
    """Check ``fn`` against the op; record it in ``rec['check']``.

    Returns:
        tuple[bool, bool]: Whether its forward and its forward+backward
        may be timed.
    """
    check = rec['check'] = dict(against=target['against'], tolerance=tol)
    try:
        check['forward_error'] = _error(_forward(fn, x), target['out'])
    except Exception as e:  # report, do not abort the benchmark
        rec['note'] = f'failed: {_first_line(e)}'
        return False, False
    if not check['forward_error'] <= tol:
        rec['note'] = (f'failed: forward differs from the op by '
                       f'{check["forward_error"]:.2e} > {tol:.0e}')
        return False, False
    try:
        grads = _gradients(fn, x)
    except Exception as e:
        rec['note'] = f'forward+backward not run: {_first_line(e)}'
        return True, False
    check['backward_error'] = max(
        _error(g, t) for g, t in zip(grads, target['grads']))
    if not check['backward_error'] <= tol:
        rec['note'] = (f'forward+backward failed: gradients differ from '
                       f'the op\'s by {check["backward_error"]:.2e} > '
                       f'{tol:.0e}')
        return True, False
    return True, True


# ----------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------
def _phase(timing: Timing, memory: dict) -> dict:
    return dict(timing.as_dict(), peak_bytes=memory['increase_bytes'])


def bench_problem(problem: OpProblem, methods, settings: OpBenchmarkSettings,
                  base: dict) -> List[dict]:
    """Check and time ``methods`` on one problem, interleaved.

    Args:
        problem (OpProblem): The problem.
        methods (Sequence[str]): Methods to time.
        settings (OpBenchmarkSettings): Repeats, warm-up, memory limit.
        base (dict): Fields every record starts with.

    Returns:
        list[dict]: One record per method: ``base``, the problem's shape,
        ``padding``, ``forward`` and ``forward_backward`` (``median_s``,
        ``cpu_median_s``, ``times_s``, ``peak_bytes``) where measured,
        ``check`` (against, tolerance, errors), ``estimated_bytes`` and a
        ``note`` where something was skipped or failed.
    """
    x = problem.inputs()
    records, fns = {}, {}
    target = None
    if any(m not in OP_ITSELF for m in methods):
        target = op_output(problem, x, settings.max_ref_gb)
    tol = TOLERANCES[problem.dtype]
    for method in methods:
        rec = records[method] = dict(
            base, method=method, padding=problem.padding, **problem.shape)
        reason, est = skip_reason(method, problem, settings.max_ref_gb)
        if est is not None:
            rec['estimated_bytes'] = est
        if reason:
            rec['note'] = reason
            continue
        try:
            fn = make_method(method, problem)
        except Exception as e:  # e.g. a peer this torch cannot build
            rec['note'] = f'failed: {_first_line(e)}'
            continue
        forward = backward = True
        if method not in OP_ITSELF:
            if target is None:
                rec['note'] = ('skipped: neither the op nor the reference '
                               'can run to check it against')
                continue
            forward, backward = check_against_op(fn, x, target, tol, rec)
        if forward:
            fns[method] = (fn, backward)
    del target
    _time(problem, x, fns, records, settings)
    return list(records.values())


def _time(problem: OpProblem, x: OpInputs, fns: Dict[str, tuple],
          records: Dict[str, dict], settings: OpBenchmarkSettings) -> None:
    """Time the forward, then the forward+backward, of ``fns``
    (name -> (fn, with backward)) interleaved; fill ``records``."""
    if not fns:
        return
    timer = Timer(problem.device,
                  TimerSettings(settings.repeats, settings.warmup))
    schedule = {'reference': (0, settings.ref_repeats)}
    grad_inputs = OpInputs(*(t.detach().clone() for t in (x.q, x.k, x.v)),
                           x.grad, x.bias.detach().clone())
    for t in (grad_inputs.q, grad_inputs.k, grad_inputs.v, grad_inputs.bias):
        t.requires_grad_()

    def forward_backward(fn):
        g = grad_inputs

        def run(i):
            fn(g.q, g.k, g.v, g.bias).backward(g.grad)
            g.q.grad = g.k.grad = g.v.grad = g.bias.grad = None

        return run

    for phase, make, names in (
            ('forward', lambda fn: _forward_call(fn, x), list(fns)),
            ('forward_backward', forward_backward,
             [m for m, (_, bwd) in fns.items() if bwd])):
        if not names:
            continue
        calls = {m: make(fns[m][0]) for m in names}
        timings = timer.run(calls, schedule)
        memory = timer.peak_memory(calls)
        for m in names:
            records[m][phase] = _phase(timings[m], memory[m])
            records[m][phase]['paired_over_fused'] = (
                paired_ratio(timings[m], timings['fused'])
                if 'fused' in timings and m != 'fused' else None)
        del calls
        if torch.device(problem.device).type == 'cuda':
            torch.cuda.empty_cache()


def _erfnet_forward(device: str, size) -> Callable[[int], torch.Tensor]:
    """A call of mmseg's single-frame ERFNet (backbone + FCN head) forward
    on a random (1, 3, H, W) input (config :data:`ERFNET_CONFIG`, through
    mmengine's hub)."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from .model_benchmark import load_config
    cfg = load_config(ERFNET_CONFIG)
    cfg.model.data_preprocessor = None
    cfg.model.pop('pretrained', None)
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model).to(device).eval()
    inputs = torch.randn(1, 3, *size, device=device)

    def forward(i):
        with torch.no_grad():
            return model(inputs, mode='tensor')

    return forward


def _bench_model(device: str, settings: OpBenchmarkSettings,
                 log: Callable[[str], None]) -> Tuple[dict, dict]:
    """The ERFNet forward, timed interleaved with the fused op (float32)
    at each shape; its timing and the interleaved ratios."""
    fns = {'erfnet': _erfnet_forward(device, settings.model_size)}
    shapes = []
    if 'fused' in settings.methods and 'float32' in settings.dtypes \
            and not _kernel_skip(settings.problem(settings.shapes[0],
                                                  'float32', device)):
        for name in settings.shapes:
            problem = settings.problem(name, 'float32', device)
            fns[f'fused/{name}'] = _forward_call(
                make_method('fused', problem), problem.inputs())
            shapes.append(name)
    timer = Timer(device, TimerSettings(settings.repeats, settings.warmup))
    timings = timer.run(fns)
    memory = timer.peak_memory({'erfnet': fns['erfnet']})
    model = dict(
        _phase(timings['erfnet'], memory['erfnet']),
        size=list(settings.model_size))
    ratios = {
        name: paired_ratio(timings[f'fused/{name}'], timings['erfnet'])
        for name in shapes
    }
    h, w = settings.model_size
    log(f'{device} ERFNet forward {h}x{w}: '
        f'{model["median_s"] * 1e3:.1f} ms')
    return model, ratios


# ----------------------------------------------------------------------
# the benchmark
# ----------------------------------------------------------------------
def _check_devices(devices) -> None:
    if 'cuda' in devices:
        if not torch.cuda.is_available():
            raise RuntimeError('devices: cuda was asked for but no CUDA '
                               'device is available')
        if not ext_has_cuda():
            raise RuntimeError('devices: cuda was asked for but '
                               'lma_mmseg._ext was built without CUDA '
                               'kernels; rebuild it with FORCE_CUDA=1 '
                               'python setup.py build_ext --inplace')


def summarise(records: List[dict], models: Dict[str, dict],
              interleaved: Dict[str, dict]) -> Tuple[List[str], dict]:
    """Ratios of the fused op to the ERFNet forward and of every other
    method to the op; keys ``{device}/{shape}/{dtype}/{ratio}``."""
    lines, ratios = [], {}
    by_key = {(r['device'], r['shape'], r['dtype'], r['method']): r
              for r in records}
    for (device, shape, dtype, method), r in by_key.items():
        if method != 'fused' or 'forward' not in r:
            continue
        key = f'{device}/{shape}/{dtype}'
        fused_f = r['forward']['median_s']
        m = models.get(device)
        if m is not None and dtype == 'float32':
            share = fused_f / m['median_s']
            ratios[key + '/fused_forward_over_erfnet_forward'] = share
            line = (f'{key}: fused forward = {share * 100:.1f}% of the '
                    f'ERFNet forward at {m["size"][0]}x{m["size"][1]} '
                    f'({fused_f * 1e3:.1f} ms vs {m["median_s"] * 1e3:.1f} '
                    'ms)')
            if torch.device(device).type == 'cpu':
                cshare = r['forward']['cpu_median_s'] / m['cpu_median_s']
                ratios[key + '/fused_forward_over_erfnet_forward_cpu'] = \
                    cshare
                line += f'; in CPU time {cshare * 100:.1f}%'
            lines.append(line)
            paired = interleaved.get(device, {}).get(shape)
            if paired is not None:
                ratios[key + '/fused_forward_over_erfnet_forward_'
                       'interleaved'] = paired
                lines.append(
                    f'{key}: fused forward = {paired * 100:.1f}% of the '
                    'ERFNet forward, timed interleaved (median of '
                    f'{len(m["times_s"])} paired runs)')
        for other in (o for o in by_key if o[:3] == (device, shape, dtype)):
            o = by_key[other]
            name = other[3]
            if name == 'fused' or 'forward' not in o:
                continue
            parts = []
            for phase, label in (('forward', 'forward'),
                                 ('forward_backward', 'forward+backward')):
                if phase not in o or phase not in r:
                    continue
                ratio = o[phase]['median_s'] / r[phase]['median_s']
                ratios[f'{key}/{name}_over_fused_{phase}_time'] = ratio
                ratios[f'{key}/{name}_over_fused_{phase}_time_paired'] = \
                    o[phase]['paired_over_fused']
                parts.append(f'{label} {ratio:.2f}')
            line = f'{key}: {name} / fused time: {", ".join(parts)}'
            if 'forward_backward' in o and 'forward_backward' in r:
                op, fp = (o['forward_backward']['peak_bytes'],
                          r['forward_backward']['peak_bytes'])
                if op and fp:
                    ratios[f'{key}/{name}_over_fused_forward_backward_peak'] \
                        = op / fp
                    line += (f'; forward+backward peak memory '
                             f'{fp / 2**20:.1f} MB (fused) vs '
                             f'{op / 2**20:.1f} MB')
            lines.append(line)
    return lines, ratios


def _log_record(rec: dict) -> str:
    parts = []
    for phase, label in (('forward', 'forward'), ('forward_backward',
                                                  'forward+backward')):
        if phase in rec:
            parts.append(f'{label} {rec[phase]["median_s"] * 1e3:.1f} ms')
    check = rec.get('check', {})
    if 'forward_error' in check:
        parts.append(f'vs {check["against"]}: max error '
                     f'{check["forward_error"]:.1e}')
    if rec.get('note'):
        parts.append(rec['note'])
    return ', '.join(parts)


def run_op_benchmark(settings: OpBenchmarkSettings = OpBenchmarkSettings(),
                     log: Callable[[str], None] = print) -> dict:
    """Check and time the op and its peers (see the module docstring).

    Args:
        settings (OpBenchmarkSettings): What to time.
        log (callable): Progress lines go there (one per record and one
            per ERFNet run, after a header).

    Returns:
        dict: ``environment``, ``settings``, ``methods`` (descriptions),
        ``memory_method``, ``erfnet_model`` (device -> timing), ``results``
        (one record per device, dtype, shape and method, see
        :func:`bench_problem`), ``ratios`` and ``summary`` (lines).
    """
    if not isinstance(settings, OpBenchmarkSettings):
        raise TypeError(f'`settings` must be an OpBenchmarkSettings, got '
                        f'{type(settings).__name__}')
    devices = settings.resolved_devices()
    _check_devices(devices)
    log(f'torch {torch.__version__}, {torch.get_num_threads()} CPU threads, '
        f'devices {list(devices)}, repeats {settings.repeats} (reference '
        f'{settings.ref_repeats}), warm-up {settings.warmup}')
    records, models, interleaved = [], {}, {}
    total = (len(devices) * len(settings.dtypes) * len(settings.shapes) *
             len(settings.methods) + (len(devices) if settings.model else 0))
    done = 0
    for device in devices:
        for dtype in settings.dtypes:
            for shape in settings.shapes:
                problem = settings.problem(shape, dtype, device)
                base = dict(device=device, dtype=dtype, shape=shape)
                for rec in bench_problem(problem, settings.methods, settings,
                                         base):
                    records.append(rec)
                    done += 1
                    log(f'[{done}/{total}] {device} {dtype} {shape} '
                        f'{rec["method"]}: {_log_record(rec)}')
                gc.collect()
        if settings.model:
            done += 1
            models[device], interleaved[device] = _bench_model(
                device, settings, lambda line: log(f'[{done}/{total}] '
                                                   + line))
    lines, ratios = summarise(records, models, interleaved)
    return dict(
        environment=dict(
            torch=torch.__version__,
            threads=torch.get_num_threads(),
            python=platform.python_version(),
            machine=platform.machine(),
            processor=platform.processor(),
            cpu_count=os.cpu_count(),
            cpu_isa=cpu_isa() if ext_available() else None,
            cuda_device=(torch.cuda.get_device_name(0)
                         if 'cuda' in devices else None),
            ext_available=ext_available(),
            ext_with_cuda=ext_has_cuda()),
        settings=dict(settings.as_dict(), devices=list(devices)),
        methods={m: DESCRIPTIONS[m] for m in settings.methods},
        memory_method={
            d: Timer(d).memory_description
            for d in devices
        },
        erfnet_model=models,
        results=records,
        ratios=ratios,
        summary=lines)
