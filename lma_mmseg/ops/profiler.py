"""Profiler of the local memory attention op.

Measures, for the fused op (:func:`~lma_mmseg.ops.local_attention`), the
unfused pair (:func:`~lma_mmseg.ops.local_attention_unfused`: correlation ->
softmax -> aggregation), the pure PyTorch reference
(:func:`~lma_mmseg.ops.local_attention_reference`) and, on request, a plain
PyTorch implementation (:func:`plain_attention`: a loop over the window
offsets, no unfolded copies) and the fused op with a position bias
(``fused_bias``), the median time and the peak memory of the
forward and of forward+backward at the paper's two settings, and, in the
same run, mmseg's single-frame ERFNet forward at 512x1024, so that the op's
share of a frame is a ratio measured side by side (also timed interleaved,
op and model back to back, the steadier figure on a shared machine):

* ``erfnet``: B=1, C=16, Cv=64, T=3, H=64, W=128, window=21 (1/8 of
  512x1024);
* ``pspnet``: B=1, C=128, Cv=2048, T=3, H=64, W=128, window=21.

Peak memory comes from :class:`lma_mmseg.evaluation.speed.MemoryProbe`
(CPU: peak resident set growth; CUDA: ``torch.cuda.max_memory_allocated``
growth). The reference materialises ``T * window**2`` shifted copies of k and
v; it is skipped (with the reason and the estimated memory) where that
estimate exceeds ``max_ref_gb`` or the available memory.

``tools/analysis/benchmark_op.py`` is the command line of
:func:`run_benchmark`.
"""
import gc
import os
import os.path as osp
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .local_attention import (_WITH_CUDA, cpu_isa, local_attention,
                              local_attention_reference,
                              local_attention_unfused)

__all__ = [
    'SHAPES', 'QUICK_SHAPES', 'METHODS', 'DTYPES', 'plain_attention',
    'reference_bytes', 'measure', 'interleaved_ratio', 'bench_op',
    'bench_erfnet', 'summarise', 'format_table', 'run_benchmark'
]

SHAPES = {
    # B, C, Cv, T, H, W, window
    'erfnet': dict(B=1, C=16, Cv=64, T=3, H=64, W=128, window=21),
    'pspnet': dict(B=1, C=128, Cv=2048, T=3, H=64, W=128, window=21),
}
QUICK_SHAPES = {
    'erfnet': dict(B=1, C=16, Cv=64, T=3, H=12, W=20, window=7),
    'pspnet': dict(B=1, C=32, Cv=96, T=2, H=8, W=12, window=5),
}
METHODS = ('fused', 'unfused', 'reference', 'plain', 'fused_bias')
DEFAULT_METHODS = ('fused', 'unfused', 'reference')
DTYPES = {
    'float32': torch.float32,
    'float16': torch.float16,
    'bfloat16': torch.bfloat16,
}
ERFNET_CONFIG = 'erfnet/erfnet_fcn_4xb4-160k_cityscapes-512x1024.py'


# ----------------------------------------------------------------------
# implementations
# ----------------------------------------------------------------------
def plain_attention(q: torch.Tensor,
                    k: torch.Tensor,
                    v: torch.Tensor,
                    window: int = 21,
                    dilation: int = 1,
                    scale: float = 1.0) -> torch.Tensor:
    """Local attention (``padding='zeros'``) as one would write it in plain
    PyTorch: a loop over the ``window**2`` offsets of zero-padded k and v.

    It keeps no unfolded copies (unlike the reference), only the
    ``(B, T, window**2, H, W)`` logits; its cost is ``window**2`` launches
    of element-wise products and reductions per call.
    """
    B, T, C, H, W = k.shape
    pad = (window // 2) * dilation
    kp = F.pad(k, (pad, pad, pad, pad))
    vp = F.pad(v, (pad, pad, pad, pad))
    offsets = [(i * dilation, j * dilation) for i in range(window)
               for j in range(window)]
    logits = torch.stack([(q[:, None] * kp[..., y:y + H, x:x + W]).sum(2)
                          for y, x in offsets], 2) * scale
    attn = logits.flatten(1, 2).softmax(1).view_as(logits)
    out = None
    for s, (y, x) in enumerate(offsets):
        part = (attn[:, :, s, None] * vp[..., y:y + H, x:x + W]).sum(1)
        out = part if out is None else out + part
    return out


def _method_fn(method: str) -> Callable:
    return dict(
        fused=local_attention,
        unfused=local_attention_unfused,
        reference=local_attention_reference,
        plain=plain_attention,
        fused_bias=local_attention)[method]


def reference_bytes(shape: dict, backward: bool, itemsize: int = 4) -> int:
    """Rough peak memory of the reference: unfolded k and v, einsum copies.

    Fitted on a CPU machine (B=1, C=16, Cv=64, T=3, 16x128, window 21: 1.33
    GB forward, 1.48 GB forward+backward measured).
    """
    B, C, Cv, T, H, W, window = (shape[k] for k in
                                 ('B', 'C', 'Cv', 'T', 'H', 'W', 'window'))
    slots = B * T * window * window * H * W
    est = slots * (1.6 * (C + Cv) + 8) * itemsize
    return int(est * (1.15 if backward else 1.0))


def _available_bytes(device: str) -> Optional[int]:
    if device == 'cuda':
        free, _ = torch.cuda.mem_get_info()
        return free
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# ----------------------------------------------------------------------
# measurement
# ----------------------------------------------------------------------
def _sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def measure(fn: Callable, device: str, repeats: int, warmup: int) -> dict:
    """Median wall time over repeats (s) and peak memory (bytes) of fn().

    ``cpu_median_s`` is the median CPU time of the process: on a machine
    shared with other jobs it is the steadier figure (with one thread it is
    what the call costs). ``peak_bytes`` is the growth of the peak memory
    over the usage before one more call, measured by
    :class:`lma_mmseg.evaluation.speed.MemoryProbe` in a separate pass
    after the timed ones (the probe returns freed memory to the system
    first, which would add page faults to a timed call).
    """
    from lma_mmseg.evaluation.speed import MemoryProbe
    probe = MemoryProbe(torch.device(device))
    for _ in range(warmup):
        fn()
    times, cpu_times = [], []
    for _ in range(repeats):
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    _sync(device)
    base = probe.before()
    fn()
    _sync(device)
    peak = max(0, probe.after() - base)
    return dict(
        median_s=statistics.median(times),
        peak_bytes=peak,
        times_s=times,
        cpu_median_s=statistics.median(cpu_times))


def _inputs(shape: dict, device: str, dtype: torch.dtype):
    g = torch.Generator(device='cpu').manual_seed(0)
    B, C, Cv, T, H, W = (shape[k] for k in ('B', 'C', 'Cv', 'T', 'H', 'W'))
    # moderate logits (about unit variance) whatever C
    q = (torch.randn(B, C, H, W, generator=g) / C**0.5).to(device, dtype)
    k = torch.randn(B, T, C, H, W, generator=g).to(device, dtype)
    v = torch.randn(B, T, Cv, H, W, generator=g).to(device, dtype)
    grad = torch.randn(B, Cv, H, W, generator=g).to(device, dtype)
    return q, k, v, grad, g


def _fused_forward(shape: dict, device: str) -> Callable:
    q, k, v, _, _ = _inputs(shape, device, torch.float32)

    def forward():
        with torch.no_grad():
            return local_attention(q, k, v, shape['window'])

    return forward


def bench_op(method: str,
             shape: dict,
             device: str,
             repeats: int,
             warmup: int,
             dtype: torch.dtype = torch.float32) -> dict:
    """Forward and forward+backward of one method at one shape."""
    T, window = shape['T'], shape['window']
    q, k, v, grad, g = _inputs(shape, device, dtype)
    fn = _method_fn(method)
    kwargs = {}
    if method == 'fused_bias':  # a position bias (T, window**2)
        kwargs['bias'] = torch.randn(T, window * window,
                                     generator=g).to(device, dtype)
    result = {}

    def forward():
        with torch.no_grad():
            return fn(q, k, v, window, **kwargs)

    result['forward'] = measure(forward, device, repeats, warmup)
    del forward
    qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))
    if kwargs:
        kwargs['bias'].requires_grad_()

    def forward_backward():
        out = fn(qg, kg, vg, window, **kwargs)
        out.backward(grad)
        qg.grad = kg.grad = vg.grad = None
        if kwargs:
            kwargs['bias'].grad = None

    result['forward_backward'] = measure(forward_backward, device, repeats,
                                         warmup)
    return result


def _erfnet_forward(device: str, size: Sequence[int]) -> Callable:
    """A call of mmseg's single-frame ERFNet (backbone + FCN head) forward
    on a random (1, 3, H, W) input."""
    import mmseg
    from mmengine import Config
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules()
    cfg_path = osp.join(
        osp.dirname(mmseg.__file__), '.mim', 'configs', ERFNET_CONFIG)
    cfg = Config.fromfile(cfg_path)
    cfg.model.data_preprocessor = None
    cfg.model.pop('pretrained', None)
    model = MODELS.build(cfg.model).to(device).eval()
    x = torch.randn(1, 3, *size, device=device)

    def forward():
        with torch.no_grad():
            return model(x, mode='tensor')

    return forward


def bench_erfnet(device: str, size: Sequence[int], repeats: int,
                 warmup: int) -> dict:
    """mmseg's single-frame ERFNet (backbone + FCN head) forward."""
    return measure(_erfnet_forward(device, size), device, repeats, warmup)


def interleaved_ratio(fn_a: Callable, fn_b: Callable, device: str,
                      pairs: int) -> dict:
    """Median over ``pairs`` of time(fn_a) / time(fn_b), the two timed
    back to back (a, b, a) so that both see the same load of a shared
    machine; steadier than a ratio of medians measured apart."""
    fn_a()
    fn_b()
    ratios = []
    for _ in range(pairs):
        times = []
        for fn in (fn_a, fn_b, fn_a):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - t0)
        ratios.append((times[0] + times[2]) / 2 / times[1])
    return dict(median=statistics.median(ratios), ratios=ratios)


# ----------------------------------------------------------------------
# report
# ----------------------------------------------------------------------
def _ms(t: Optional[float]) -> str:
    return '-' if t is None else f'{t * 1e3:.1f}'


def _mb(b: Optional[int]) -> str:
    return '-' if b is None else f'{b / 2**20:.1f}'


def format_table(records: List[dict]) -> str:
    """The records as a text table."""
    header = ('device', 'dtype', 'shape', 'method', 'fwd ms', 'fwd cpu ms',
              'fwd MB', 'fwd+bwd ms', 'fwd+bwd cpu ms', 'fwd+bwd MB', 'note')
    rows = []
    for r in records:
        f, fb = r.get('forward') or {}, r.get('forward_backward') or {}
        rows.append((r['device'], r['dtype'], r['shape'], r['method'],
                     _ms(f.get('median_s')), _ms(f.get('cpu_median_s')),
                     _mb(f.get('peak_bytes')), _ms(fb.get('median_s')),
                     _ms(fb.get('cpu_median_s')), _mb(fb.get('peak_bytes')),
                     r.get('note', '')))
    try:
        from prettytable import PrettyTable
    except ImportError:
        widths = [
            max(len(str(x)) for x in col) for col in zip(header, *rows)
        ]
        return '\n'.join(
            '  '.join(str(x).ljust(w) for x, w in zip(row, widths))
            for row in (header, *rows))
    table = PrettyTable(header)
    for row in rows:
        table.add_row(row)
    return table.get_string()


def summarise(records: List[dict],
              model: Dict[str, dict]) -> Tuple[List[str], Dict[str, float]]:
    """Ratios of the fused op to the ERFNet forward, the unfused pair and the
    reference; keys ``{device}/{shape}/{dtype}/{ratio}``."""
    lines, ratios = [], {}
    by_key = {(r['device'], r['shape'], r['dtype'], r['method']): r
              for r in records}
    for (device, shape, dtype, method), r in by_key.items():
        if method != 'fused' or 'forward' not in r:
            continue
        key = f'{device}/{shape}/{dtype}'
        fused_f = r['forward']['median_s']
        fused_fb = r['forward_backward']['median_s']
        m = model.get(device)
        if m is not None:
            share = fused_f / m['median_s']
            ratios[key + '/fused_forward_over_erfnet_forward'] = share
            line = (f'{key}: fused forward = {share * 100:.1f}% of the '
                    f'ERFNet forward at {m["size"][0]}x{m["size"][1]} '
                    f'({_ms(fused_f)} ms vs {_ms(m["median_s"])} ms)')
            if device == 'cpu':
                cshare = r['forward']['cpu_median_s'] / m['cpu_median_s']
                ratios[key + '/fused_forward_over_erfnet_forward_cpu'] = \
                    cshare
                line += f'; in CPU time {cshare * 100:.1f}%'
            lines.append(line)
        for other in ('unfused', 'plain', 'reference', 'fused_bias'):
            o = by_key.get((device, shape, dtype, other))
            if o is None or 'forward' not in o:
                continue
            f_ratio = o['forward']['median_s'] / fused_f
            fb_ratio = o['forward_backward']['median_s'] / fused_fb
            ratios[f'{key}/{other}_over_fused_forward_time'] = f_ratio
            ratios[f'{key}/{other}_over_fused_forward_backward_time'] = \
                fb_ratio
            line = (f'{key}: {other} / fused time: forward {f_ratio:.2f}, '
                    f'forward+backward {fb_ratio:.2f}')
            op, fp = (o['forward_backward']['peak_bytes'],
                      r['forward_backward']['peak_bytes'])
            if op and fp:
                ratios[f'{key}/{other}_over_fused_forward_backward_peak'] = \
                    op / fp
                line += (f'; forward+backward peak memory {_mb(fp)} MB '
                         f'(fused) vs {_mb(op)} MB')
            lines.append(line)
    return lines, ratios


def _resolve_devices(devices: Sequence[str]) -> List[str]:
    out = []
    for d in devices:
        if d == 'auto':
            out += ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
        elif d in ('cpu', 'cuda'):
            out.append(d)
        else:
            raise ValueError(f"devices must be 'auto', 'cpu' or 'cuda', got "
                             f'{d!r}')
    return list(dict.fromkeys(out))


def _check_choices(values, choices, what):
    bad = [v for v in values if v not in choices]
    if bad or not values:
        raise ValueError(f'{what} must be a non-empty list of '
                         f'{sorted(choices)}, got {list(values)}')


def run_benchmark(devices: Sequence[str] = ('auto', ),
                  shapes: Sequence[str] = ('erfnet', 'pspnet'),
                  methods: Sequence[str] = DEFAULT_METHODS,
                  dtypes: Sequence[str] = ('float32', ),
                  repeats: int = 5,
                  ref_repeats: int = 2,
                  warmup: int = 1,
                  max_ref_gb: float = 16.0,
                  model_size: Sequence[int] = (512, 1024),
                  model: bool = True,
                  quick: bool = False,
                  log: Callable[[str], None] = print) -> dict:
    """Measure the op (and the ERFNet forward) and return the results.

    Args:
        devices (Sequence[str]): ``'cpu'``, ``'cuda'`` or ``'auto'`` (CPU,
            plus CUDA when available).
        shapes (Sequence[str]): keys of :data:`SHAPES`.
        methods (Sequence[str]): of :data:`METHODS`.
        dtypes (Sequence[str]): keys of :data:`DTYPES`; the compiled CPU
            kernels have no half types, such records are skipped with a
            note.
        repeats (int): timed runs (median), ``ref_repeats`` for the
            reference (no warm-up run for it).
        warmup (int): untimed runs first.
        max_ref_gb (float): skip the reference where its estimated memory
            is larger (or above 80% of the available memory).
        model_size (Sequence[int]): (H, W) input of the ERFNet forward.
        model (bool): also time the ERFNet forward (float32).
        quick (bool): the tiny :data:`QUICK_SHAPES` (a smoke test).
        log (callable): progress lines go there.

    Returns:
        dict: ``environment``, ``settings``, ``memory_method``,
        ``erfnet_model`` (device -> timing), ``results`` (one record per
        device, dtype, shape and method), ``ratios`` and ``summary`` (lines).
    """
    # the arguments of this call, recorded in the result (devices resolved)
    arguments = dict(locals())
    from lma_mmseg.evaluation.speed import MemoryProbe
    if repeats < 1 or ref_repeats < 1 or warmup < 0:
        raise ValueError('repeats and ref_repeats must be >= 1 and warmup '
                         f'>= 0, got {repeats}, {ref_repeats}, {warmup}')
    _check_choices(shapes, SHAPES, 'shapes')
    _check_choices(methods, METHODS, 'methods')
    _check_choices(dtypes, DTYPES, 'dtypes')
    devices = _resolve_devices(devices)
    if 'cuda' in devices:
        if not torch.cuda.is_available():
            raise RuntimeError('device cuda: no CUDA device is available')
        if not _WITH_CUDA:
            raise RuntimeError('device cuda: lma_mmseg._ext was built '
                               'without CUDA kernels; rebuild it with '
                               'FORCE_CUDA=1 python setup.py build_ext '
                               '--inplace')
    table = QUICK_SHAPES if quick else SHAPES
    tasks = [(d, t, s, m) for d in devices for t in dtypes for s in shapes
             for m in methods]
    n_tasks = len(tasks) + (len(devices) if model else 0)
    done = 0
    records, models = [], {}
    log(f'torch {torch.__version__}, {torch.get_num_threads()} CPU threads, '
        f'devices {devices}, repeats {repeats} (reference {ref_repeats})')
    for device in devices:
        if model:
            models[device] = dict(
                bench_erfnet(device, model_size, repeats, warmup),
                size=list(model_size))
            done += 1
            log(f'[{done}/{n_tasks}] {device} ERFNet forward '
                f'{model_size[0]}x{model_size[1]}: '
                f'{_ms(models[device]["median_s"])} ms')
        for dtype in dtypes:
            for shape_name in shapes:
                shape = table[shape_name]
                for method in methods:
                    rec = dict(device=device, dtype=dtype, shape=shape_name,
                               method=method, **shape)
                    records.append(rec)
                    done += 1
                    prefix = (f'[{done}/{n_tasks}] {device} {dtype} '
                              f'{shape_name} {method}')
                    note = _skip_reason(method, shape, device, dtype,
                                        max_ref_gb, rec)
                    if note:
                        rec['note'] = note
                        log(f'{prefix}: {note}')
                        continue
                    reference = method == 'reference'
                    rec.update(
                        bench_op(method, shape, device,
                                 ref_repeats if reference else repeats,
                                 0 if reference else warmup, DTYPES[dtype]))
                    log(f'{prefix}: forward '
                        f'{_ms(rec["forward"]["median_s"])} ms, '
                        'forward+backward '
                        f'{_ms(rec["forward_backward"]["median_s"])} ms')
                    gc.collect()
                    if device == 'cuda':
                        torch.cuda.empty_cache()
    lines, ratios = summarise(records, models)
    if model and 'fused' in methods and 'float32' in dtypes:
        # the share of the ERFNet forward, timed interleaved
        for device in devices:
            erfnet = _erfnet_forward(device, model_size)
            for shape_name in shapes:
                shape = table[shape_name]
                forward = _fused_forward(shape, device)
                r = interleaved_ratio(forward, erfnet, device, repeats)
                key = (f'{device}/{shape_name}/float32/'
                       'fused_forward_over_erfnet_forward_interleaved')
                ratios[key] = r['median']
                lines.append(
                    f'{device}/{shape_name}/float32: fused forward = '
                    f'{r["median"] * 100:.1f}% of the ERFNet forward, timed '
                    f'interleaved (median of {repeats} pairs)')
    return dict(
        environment=dict(
            torch=torch.__version__,
            threads=torch.get_num_threads(),
            python=platform.python_version(),
            machine=platform.machine(),
            processor=platform.processor(),
            cpu_count=os.cpu_count(),
            cpu_isa=cpu_isa(),
            cuda_device=(torch.cuda.get_device_name(0)
                         if 'cuda' in devices else None),
            ext_with_cuda=_WITH_CUDA),
        settings={
            name: list(value) if isinstance(value, (list, tuple)) else value
            for name, value in dict(arguments, devices=devices).items()
            if name != 'log'
        },
        memory_method={
            d: MemoryProbe(torch.device(d)).description
            for d in devices
        },
        erfnet_model=models,
        results=records,
        ratios=ratios,
        summary=lines)


def _skip_reason(method, shape, device, dtype, max_ref_gb, rec) -> str:
    """Why a record is not measured ('' when it is)."""
    if (device == 'cpu' and dtype != 'float32'
            and method in ('fused', 'unfused', 'fused_bias')):
        return f'skipped: the CPU kernels have no {dtype}'
    if method == 'reference':
        itemsize = DTYPES[dtype].itemsize
        est = reference_bytes(shape, backward=True, itemsize=itemsize)
        avail = _available_bytes(device)
        limit = max_ref_gb * 2**30
        if avail is not None:
            limit = min(limit, 0.8 * avail)
        rec['estimated_bytes'] = est
        if est > limit:
            return (f'skipped: needs ~{est / 2**30:.1f} GB > limit '
                    f'{limit / 2**30:.1f} GB')
    return ''
