"""Benchmark of the local memory attention op.

Measures, for the fused op (``local_attention``), the unfused pair
(``local_correlation`` -> softmax -> ``local_aggregation``) and the pure
PyTorch reference, the median time and the peak memory of the forward and
of forward+backward at the paper's two settings, and, in the same run,
mmseg's single-frame ERFNet forward at 512x1024, so that the op's share of
a frame is a ratio measured side by side:

* ``erfnet``: B=1, C=16, Cv=64, T=3, H=64, W=128, window=21 (1/8 of
  512x1024);
* ``pspnet``: B=1, C=128, Cv=2048, T=3, H=64, W=128, window=21.

Peak memory is the growth of the process' peak resident set (Linux
``VmHWM``, reset through ``/proc/self/clear_refs``) on CPU and
``torch.cuda.max_memory_allocated`` on CUDA, above what was in use before the
call. The reference materialises ``T * window**2`` shifted copies of k and v;
it is skipped (with the reason and the estimated memory printed) where that
estimate exceeds ``--max-ref-gb`` or the available memory.

Examples::

    python tools/analysis/benchmark_op.py --out work_dirs/benchmark_op.json
    python tools/analysis/benchmark_op.py --device cuda --shapes erfnet pspnet
    python tools/analysis/benchmark_op.py --quick   # seconds, tiny shapes
"""
import argparse
import gc
import json
import os
import os.path as osp
import platform
import statistics
import sys
import tempfile
import time

import torch

SHAPES = {
    # B, C, Cv, T, H, W, window
    'erfnet': dict(B=1, C=16, Cv=64, T=3, H=64, W=128, window=21),
    'pspnet': dict(B=1, C=128, Cv=2048, T=3, H=64, W=128, window=21),
}
QUICK_SHAPES = {
    'erfnet': dict(B=1, C=16, Cv=64, T=3, H=12, W=20, window=7),
    'pspnet': dict(B=1, C=32, Cv=96, T=2, H=8, W=12, window=5),
}
METHODS = ('fused', 'unfused', 'reference')
ERFNET_CONFIG = 'erfnet/erfnet_fcn_4xb4-160k_cityscapes-512x1024.py'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Time and memory of the local attention op (fused, '
        'unfused, reference) and of the ERFNet 512x1024 forward.')
    parser.add_argument(
        '--device',
        nargs='+',
        default=['auto'],
        choices=['auto', 'cpu', 'cuda'],
        help='devices to run on; auto = cpu, plus cuda when available')
    parser.add_argument(
        '--shapes',
        nargs='+',
        default=['erfnet', 'pspnet'],
        choices=sorted(SHAPES),
        help='op settings to measure')
    parser.add_argument(
        '--methods',
        nargs='+',
        default=list(METHODS),
        choices=METHODS,
        help='implementations to measure')
    parser.add_argument(
        '--repeats', type=int, default=5, help='timed runs (median)')
    parser.add_argument(
        '--ref-repeats',
        type=int,
        default=2,
        help='timed runs of the (slow) reference')
    parser.add_argument(
        '--warmup', type=int, default=1, help='untimed runs first')
    parser.add_argument(
        '--max-ref-gb',
        type=float,
        default=16.0,
        help='skip the reference where its estimated memory is larger')
    parser.add_argument(
        '--model-size',
        type=int,
        nargs=2,
        default=[512, 1024],
        metavar=('H', 'W'),
        help='input size of the ERFNet forward')
    parser.add_argument(
        '--no-model',
        action='store_true',
        help='skip the ERFNet forward (and the ratio to it)')
    parser.add_argument(
        '--threads',
        type=int,
        default=None,
        help='torch CPU threads (default: torch default)')
    parser.add_argument(
        '--quick',
        action='store_true',
        help='tiny shapes and a 64x128 ERFNet input: a smoke test')
    parser.add_argument('--out', default=None, help='write results as JSON')
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.ref_repeats < 1 or args.warmup < 0:
        parser.error('--repeats and --ref-repeats must be >= 1, --warmup '
                     '>= 0')
    if args.quick and args.model_size == [512, 1024]:
        args.model_size = [64, 128]
    return args


# ----------------------------------------------------------------------
# memory measurement
# ----------------------------------------------------------------------
def _proc_status_kb(key):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1])
    raise KeyError(key)


def _release_free_heap():
    """Give freed heap memory back to the OS (glibc) so that the next
    allocations show up in the resident set; best effort."""
    try:
        import ctypes
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss():
    """Reset VmHWM to the current RSS; False where the kernel refuses."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory above the level at entry, in bytes (CPU or CUDA)."""

    def __init__(self, device):
        self.device = device
        self.peak = None

    def __enter__(self):
        gc.collect()
        if self.device == 'cuda':
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            _release_free_heap()
            self.supported = (sys.platform.startswith('linux')
                              and _reset_peak_rss())
            self.base = _proc_status_kb('VmRSS') * 1024 \
                if self.supported else 0
        return self

    def __exit__(self, *exc):
        if self.device == 'cuda':
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        elif self.supported:
            self.peak = max(0, _proc_status_kb('VmHWM') * 1024 - self.base)
        return False


def _available_bytes(device):
    if device == 'cuda':
        free, _ = torch.cuda.mem_get_info()
        return free
    try:
        return _proc_status_kb_meminfo('MemAvailable')
    except (OSError, KeyError):
        return None


def _proc_status_kb_meminfo(key):
    with open('/proc/meminfo') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def reference_bytes(shape, backward, itemsize=4):
    """Rough peak memory of the reference: unfolded k and v, einsum copies.

    Fitted on this machine (B=1, C=16, Cv=64, T=3, 16x128, window 21: 1.33
    GB forward, 1.48 GB forward+backward measured).
    """
    B, C, Cv, T, H, W, window = (shape[k] for k in
                                 ('B', 'C', 'Cv', 'T', 'H', 'W', 'window'))
    slots = B * T * window * window * H * W
    est = slots * (1.6 * (C + Cv) + 8) * itemsize
    return int(est * (1.15 if backward else 1.0))


# ----------------------------------------------------------------------
# the three implementations
# ----------------------------------------------------------------------
def unfused_attention(q, k, v, window, dilation=1, scale=1.0):
    """local_correlation -> joint softmax -> local_aggregation (zeros)."""
    from lma_mmseg.ops import local_aggregation, local_correlation
    B, T = k.shape[:2]
    H, W = q.shape[-2:]
    corr = local_correlation(q, k, window, dilation) * scale
    attn = corr.view(B, -1, H, W).softmax(dim=1).view_as(corr)
    return local_aggregation(attn, v, window, dilation)


def get_fn(method):
    from lma_mmseg.ops import local_attention, local_attention_reference
    return dict(
        fused=local_attention,
        unfused=unfused_attention,
        reference=local_attention_reference)[method]


def _sync(device):
    if device == 'cuda':
        torch.cuda.synchronize()


def measure(fn, device, repeats, warmup):
    """Median wall time over repeats (s), peak memory (bytes) of fn().

    ``cpu_median_s`` is the median CPU time of the process: on a machine
    shared with other jobs it is the steadier figure (with one thread it
    is what the call costs).
    """
    for _ in range(warmup):
        fn()
    times, cpu_times, peaks = [], [], []
    for _ in range(repeats):
        with PeakMemory(device) as mem:
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            _sync(device)
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
        peaks.append(mem.peak)
    peak = None if any(p is None for p in peaks) else max(peaks)
    return dict(
        median_s=statistics.median(times),
        peak_bytes=peak,
        times_s=times,
        cpu_median_s=statistics.median(cpu_times))


def bench_op(method, shape, device, repeats, warmup):
    """Forward and forward+backward of one method at one shape."""
    g = torch.Generator(device='cpu').manual_seed(0)
    B, C, Cv, T, H, W, window = (shape[k] for k in
                                 ('B', 'C', 'Cv', 'T', 'H', 'W', 'window'))
    q = torch.randn(B, C, H, W, generator=g).to(device)
    k = torch.randn(B, T, C, H, W, generator=g).to(device)
    v = torch.randn(B, T, Cv, H, W, generator=g).to(device)
    grad = torch.randn(B, Cv, H, W, generator=g).to(device)
    fn = get_fn(method)
    result = {}

    def forward():
        with torch.no_grad():
            return fn(q, k, v, window)

    result['forward'] = measure(forward, device, repeats, warmup)
    del forward
    qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))

    def forward_backward():
        out = fn(qg, kg, vg, window)
        out.backward(grad)
        qg.grad = kg.grad = vg.grad = None

    result['forward_backward'] = measure(forward_backward, device, repeats,
                                         warmup)
    return result


def bench_erfnet(device, size, repeats, warmup):
    """mmseg's single-frame ERFNet (backbone + FCN head) forward."""
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

    return measure(forward, device, repeats, warmup)


# ----------------------------------------------------------------------
# report
# ----------------------------------------------------------------------
def _ms(t):
    return '-' if t is None else f'{t * 1e3:.1f}'


def _mb(b):
    return '-' if b is None else f'{b / 2**20:.1f}'


def print_table(records):
    header = ('device', 'shape', 'method', 'fwd ms', 'fwd cpu ms', 'fwd MB',
              'fwd+bwd ms', 'fwd+bwd cpu ms', 'fwd+bwd MB', 'note')
    rows = []
    for r in records:
        f, fb = r.get('forward') or {}, r.get('forward_backward') or {}
        rows.append((r['device'], r['shape'], r['method'],
                     _ms(f.get('median_s')), _ms(f.get('cpu_median_s')),
                     _mb(f.get('peak_bytes')), _ms(fb.get('median_s')),
                     _ms(fb.get('cpu_median_s')), _mb(fb.get('peak_bytes')),
                     r.get('note', '')))
    try:
        from prettytable import PrettyTable
        table = PrettyTable(header)
        for row in rows:
            table.add_row(row)
        print(table)
    except ImportError:
        widths = [
            max(len(str(x)) for x in col) for col in zip(header, *rows)
        ]
        for row in (header, *rows):
            print('  '.join(str(x).ljust(w) for x, w in zip(row, widths)))


def summarise(records, model):
    """Ratios: fused vs the ERFNet forward and vs the reference."""
    lines, ratios = [], {}
    by_key = {(r['device'], r['shape'], r['method']): r for r in records}
    for (device, shape, method), r in by_key.items():
        if method != 'fused' or 'forward' not in r:
            continue
        key = f'{device}/{shape}'
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
        ref = by_key.get((device, shape, 'reference'))
        if ref is not None and 'forward' in ref:
            speed = ref['forward_backward']['median_s'] / fused_fb
            ratios[key + '/reference_over_fused_forward_backward_time'] = \
                speed
            line = (f'{key}: fused forward+backward is {speed:.1f}x faster '
                    'than the reference')
            if device == 'cpu':
                cspeed = (ref['forward_backward']['cpu_median_s'] /
                          r['forward_backward']['cpu_median_s'])
                ratios[key + '/reference_over_fused_forward_backward_cpu'] = \
                    cspeed
                line += f' ({cspeed:.1f}x in CPU time)'
            rp = ref['forward_backward']['peak_bytes']
            fp = r['forward_backward']['peak_bytes']
            if rp and fp:
                ratios[key + '/reference_over_fused_forward_backward_peak'] = \
                    rp / fp
                line += (f', peak memory {_mb(fp)} MB vs {_mb(rp)} MB '
                         f'(1/{rp / fp:.0f})')
            lines.append(line)
        unf = by_key.get((device, shape, 'unfused'))
        if unf is not None and 'forward' in unf:
            ratios[key + '/unfused_over_fused_forward_time'] = \
                unf['forward']['median_s'] / fused_f
    return lines, ratios


def write_json(path, data):
    """Write JSON atomically: a temp file in the same folder, then rename."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=folder, prefix='.' + osp.basename(path), suffix='.tmp')
    try:
        with os.fdopen(fd, 'w') as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def main(argv=None):
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    import lma_mmseg  # noqa: F401  (registers, loads the kernels)
    from lma_mmseg import _ext

    devices = []
    for d in args.device:
        if d == 'auto':
            devices += ['cpu'] + (['cuda'] if torch.cuda.is_available()
                                  else [])
        else:
            devices.append(d)
    devices = list(dict.fromkeys(devices))
    if 'cuda' in devices:
        if not torch.cuda.is_available():
            raise SystemExit('--device cuda: no CUDA device is available')
        if not _ext.with_cuda():
            raise SystemExit('--device cuda: lma_mmseg._ext was built '
                             'without CUDA kernels; rebuild it with '
                             'FORCE_CUDA=1 python setup.py build_ext '
                             '--inplace')
    shapes = QUICK_SHAPES if args.quick else SHAPES

    tasks = [(d, s, m) for d in devices for s in args.shapes
             for m in args.methods]
    n_tasks = len(tasks) + (0 if args.no_model else len(devices))
    done = 0
    records, model = [], {}
    print(f'torch {torch.__version__}, {torch.get_num_threads()} CPU '
          f'threads, devices {devices}, repeats {args.repeats} '
          f'(reference {args.ref_repeats})', flush=True)
    for device in devices:
        if not args.no_model:
            model[device] = dict(
                bench_erfnet(device, args.model_size, args.repeats,
                             args.warmup),
                size=list(args.model_size))
            med = model[device]['median_s']
            done += 1
            print(f'[{done}/{n_tasks}] {device} ERFNet forward '
                  f'{args.model_size[0]}x{args.model_size[1]}: '
                  f'{_ms(med)} ms', flush=True)
        for shape_name in args.shapes:
            shape = shapes[shape_name]
            for method in args.methods:
                rec = dict(device=device, shape=shape_name, method=method,
                           **shape)
                done += 1
                prefix = f'[{done}/{n_tasks}] {device} {shape_name} {method}'
                if method == 'reference':
                    est = reference_bytes(shape, backward=True)
                    avail = _available_bytes(device)
                    limit = args.max_ref_gb * 2**30
                    if avail is not None:
                        limit = min(limit, 0.8 * avail)
                    rec['estimated_bytes'] = est
                    if est > limit:
                        rec['note'] = (f'skipped: needs ~{est / 2**30:.1f} '
                                       f'GB > limit {limit / 2**30:.1f} GB')
                        print(f'{prefix}: {rec["note"]}', flush=True)
                        records.append(rec)
                        continue
                repeats = (args.ref_repeats
                           if method == 'reference' else args.repeats)
                warmup = 0 if method == 'reference' else args.warmup
                res = bench_op(method, shape, device, repeats, warmup)
                rec.update(res)
                records.append(rec)
                print(f'{prefix}: forward {_ms(rec["forward"]["median_s"])}'
                      f' ms, forward+backward '
                      f'{_ms(rec["forward_backward"]["median_s"])} ms',
                      flush=True)
                gc.collect()
                if device == 'cuda':
                    torch.cuda.empty_cache()

    print_table(records)
    lines, ratios = summarise(records, model)
    for line in lines:
        print(line)
    result = dict(
        environment=dict(
            torch=torch.__version__,
            threads=torch.get_num_threads(),
            python=platform.python_version(),
            machine=platform.machine(),
            processor=platform.processor(),
            cpu_count=os.cpu_count(),
            cuda_device=(torch.cuda.get_device_name(0)
                         if 'cuda' in devices else None),
            ext_with_cuda=bool(_ext.with_cuda())),
        args=vars(args),
        memory_method=('CPU: growth of VmHWM (peak RSS, reset through '
                       '/proc/self/clear_refs); CUDA: '
                       'torch.cuda.max_memory_allocated growth'),
        erfnet_model=model,
        results=records,
        ratios=ratios)
    if args.out:
        write_json(args.out, result)
        print(f'results written to {args.out}')
    return result


if __name__ == '__main__':
    main()
