"""The report of the benchmarks: text tables (prettytable) and JSON files
(written atomically by :func:`lma_mmseg.fileio.atomic_write_json`).

* :func:`op_table`: one row per op benchmark record (time, CPU time, peak
  memory of the forward and of the forward+backward, check, note);
* :func:`peer_table`: the time of every method over the time of the fused
  op, from the same interleaved runs;
* :func:`model_report`: the model benchmark's table and overheads;
* :func:`baseline_report`: the baseline's part of a model benchmark, as a
  benchmark of its own;
* :func:`write_json`: a result as a JSON file.
"""
import os.path as osp
from typing import List, Optional, Sequence

from prettytable import PrettyTable

from ..fileio import atomic_write_json
from .model_benchmark import primary_summary

__all__ = [
    'format_table', 'op_table', 'peer_table', 'model_report',
    'baseline_report', 'write_json'
]


def format_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A text table of ``rows`` under ``header``."""
    table = PrettyTable(list(header))
    for row in rows:
        table.add_row(list(row))
    return table.get_string()


def _ms(t: Optional[float]) -> str:
    return '-' if t is None else f'{t * 1e3:.1f}'


def _mb(b: Optional[int]) -> str:
    return '-' if b is None else f'{b / 2**20:.1f}'


def _ratio(r: Optional[float]) -> str:
    return '-' if r is None else f'{r:.2f}'


def _check(rec: dict) -> str:
    check = rec.get('check') or {}
    errors = [
        f'{check[k]:.0e}' for k in ('forward_error', 'backward_error')
        if k in check
    ]
    return '/'.join(errors) or '-'


def op_table(records: List[dict]) -> str:
    """The op benchmark's records as a text table (``check``: the largest
    relative difference to the op, forward/backward)."""
    header = ('device', 'dtype', 'shape', 'method', 'fwd ms', 'fwd cpu ms',
              'fwd MB', 'fwd+bwd ms', 'fwd+bwd cpu ms', 'fwd+bwd MB',
              'check', 'note')
    rows = []
    for r in records:
        f, fb = r.get('forward') or {}, r.get('forward_backward') or {}
        rows.append((r['device'], r['dtype'], r['shape'], r['method'],
                     _ms(f.get('median_s')), _ms(f.get('cpu_median_s')),
                     _mb(f.get('peak_bytes')), _ms(fb.get('median_s')),
                     _ms(fb.get('cpu_median_s')), _mb(fb.get('peak_bytes')),
                     _check(r), r.get('note', '')))
    return format_table(header, rows)


def peer_table(records: List[dict]) -> str:
    """Time of each method / time of the fused op, per device, dtype and
    shape: the ratio of the medians and the median of the per-round ratios
    (``paired``), forward and forward+backward; empty without a fused
    record."""
    fused = {(r['device'], r['dtype'], r['shape']): r
             for r in records if r['method'] == 'fused' and 'forward' in r}
    header = ('device', 'dtype', 'shape', 'method', 'fwd ms', 'fwd / fused',
              'fwd paired', 'fwd+bwd ms', 'fwd+bwd / fused',
              'fwd+bwd paired', 'note')
    rows = []
    for r in records:
        op = fused.get((r['device'], r['dtype'], r['shape']))
        if op is None:
            continue
        cells = []
        for phase in ('forward', 'forward_backward'):
            mine, ref = r.get(phase), op.get(phase)
            ratio = (mine['median_s'] / ref['median_s']
                     if mine and ref else None)
            cells += [
                _ms(mine and mine['median_s']),
                _ratio(ratio),
                _ratio(mine and mine.get('paired_over_fused'))
            ]
        rows.append((r['device'], r['dtype'], r['shape'], r['method'],
                     *cells, r.get('note', '')))
    return format_table(header, rows) if rows else ''


def model_report(res: dict) -> str:
    """The model benchmark's result as a text table with the overheads."""
    header = [
        'model', 'mode', 'median ms', 'p90 ms', 'mean ms', 'FPS',
        'peak mem MB', 'frame mem MB', 'params M', 'GFLOPs'
    ]
    rows = []
    for r in res['results']:
        cfg = res[r['role']]['config']
        rows.append([
            f'{r["role"]}: {osp.basename(cfg)}',
            r['mode'] + ('+compile' if r.get('compiled') else ''),
            r['median_ms'], r['p90_ms'], r['mean_ms'], r['fps'],
            r['peak_memory_mb'], r['peak_memory_increase_mb'],
            round(r['params'] / 1e6, 3),
            '-' if r.get('gflops') is None else r['gflops']
        ])
    lines = [
        f'device {res["device"]} ({res["device_name"]}), input '
        f'{res["input"]}, {res.get("dtype", "float32")}, {res["warmup"]} '
        f'warm-up + {res["frames"]} timed frames, interleaved',
        format_table(header, rows),
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
        lines.append(f'torch.compile ({res.get("compile_backend")}), '
                     f'{c["role"]} {c["mode"]}: '
                     f'{c["eager_ms"]:.2f} -> {c["compiled_ms"]:.2f} ms '
                     f'(eager / compiled x{c["speedup"]:.3f})')
    return '\n'.join(lines)


def baseline_report(res: dict) -> dict:
    """The baseline's part of an interleaved model benchmark, shaped as a
    benchmark of the baseline alone (its timings were taken in the same run
    as the model's, so the two are comparable)."""
    if not res.get('baseline'):
        raise ValueError('baseline_report: the benchmark has no baseline')
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


def write_json(path: str, result: dict) -> str:
    """Write a benchmark result as JSON, atomically (a temporary file
    renamed into place); returns the path."""
    return atomic_write_json(path, result)
