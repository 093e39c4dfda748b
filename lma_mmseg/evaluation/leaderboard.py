"""Leaderboard: accuracy (tools/test.py) and speed (tools/benchmark.py).

A run is a test result JSON (``kind: lma_mmseg.test``) and/or a benchmark
JSON (``kind: lma_mmseg.benchmark``). Runs are given either

* as run folders: every ``*.json`` directly inside the folder is read and
  classified by its ``kind`` (other JSON files are ignored); a folder holds
  at most one of each kind, and the run is named after the folder; or
* explicitly, as ``(name, test_json, bench_json)`` with ``None`` (``-`` on
  the command line) for a missing part.

The speed columns come from the benchmark's ``primary`` entry: streaming for
memory models, single-frame inference otherwise.

A run folder may also hold the temporal consistency result of
``tools/analysis/temporal_consistency.py`` (``kind:
lma_mmseg.temporal_consistency``); the table then gets a ``TC`` column (shown
only when some run has one).
"""
import csv
import glob
import io
import json
import os.path as osp
from typing import List, Optional, Sequence

from ..benchmarks.model_benchmark import BENCH_KIND, PRIMARY_KEYS
from ..fileio import atomic_write_bytes, atomic_write_text
from .metrics.cityscapes_leaderboard_metric import TEST_KIND
from .temporal_consistency import TC_KIND

#: (key, markdown header) of the table columns, in order.
COLUMNS = [
    ('method', 'method'),
    ('backbone', 'backbone'),
    ('memory_length', 'memory length'),
    ('mIoU', 'mIoU'),
    ('mIoU_category', 'category mIoU'),
    ('TC', 'TC'),
    ('ms_per_frame', 'ms/frame'),
    ('fps', 'FPS'),
    ('params_m', 'params (M)'),
    ('gflops', 'GFLOPs'),
]
#: Table columns shown only when some row has a value.
OPTIONAL_COLUMNS = ('TC', )
#: Extra CSV columns.
CSV_EXTRA = ['model', 'mode', 'p90_ms', 'device', 'shape', 'split',
             'test_json', 'bench_json', 'tc_json']


def load_result(path: str, kind: Optional[str] = None) -> dict:
    """Read a result JSON; check its ``kind`` when given."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'result file {path!r} not found')
    with open(path, encoding='utf-8') as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f'{path!r} is not valid JSON: {e}') from None
    if not isinstance(data, dict) or data.get('kind') not in (
            TEST_KIND, BENCH_KIND, TC_KIND):
        raise ValueError(
            f'{path!r} is not a result of tools/test.py or '
            f'tools/benchmark.py (no "kind": {TEST_KIND!r} or {BENCH_KIND!r})')
    if kind is not None and data['kind'] != kind:
        raise ValueError(f'{path!r} has kind {data["kind"]!r}, expected '
                         f'{kind!r}')
    if data['kind'] == TEST_KIND and data.get('format_only'):
        raise ValueError(f'{path!r} is a --format-only export: it has no '
                         'metrics')
    return data


def runs_from_folder(folder: str) -> dict:
    """A run from a folder holding its result JSONs."""
    if not osp.isdir(folder):
        raise FileNotFoundError(f'run folder {folder!r} not found')
    found = {TEST_KIND: [], BENCH_KIND: [], TC_KIND: []}
    for path in sorted(glob.glob(osp.join(folder, '*.json'))):
        try:
            with open(path, encoding='utf-8') as f:
                kind = json.load(f).get('kind')
        except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
            continue
        if kind in found:
            found[kind].append(path)
    for kind, paths in found.items():
        if len(paths) > 1:
            raise ValueError(f'run folder {folder!r} holds several {kind} '
                             f'results: {paths}; keep one or use --run')
    test = found[TEST_KIND][0] if found[TEST_KIND] else None
    bench = found[BENCH_KIND][0] if found[BENCH_KIND] else None
    tc = found[TC_KIND][0] if found[TC_KIND] else None
    if test is None and bench is None and tc is None:
        raise ValueError(f'run folder {folder!r} holds no result JSON of '
                         'tools/test.py or tools/benchmark.py')
    name = osp.basename(osp.normpath(folder))
    return make_run(name, test, bench, tc)


def make_run(name: str,
             test_json: Optional[str],
             bench_json: Optional[str],
             tc_json: Optional[str] = None) -> dict:
    """One leaderboard row from a test, a benchmark and a temporal
    consistency JSON (any of them None, not all)."""
    if test_json is None and bench_json is None and tc_json is None:
        raise ValueError(f'run {name!r}: give a test or a benchmark JSON')
    tc = load_result(tc_json, TC_KIND) if tc_json else None
    test = load_result(test_json, TEST_KIND) if test_json else None
    bench = load_result(bench_json, BENCH_KIND) if bench_json else None
    meta = (test or {}).get('meta') or (tc or {}).get('meta') or {}
    model = (bench or {}).get('model') or {}
    primary = (bench or {}).get('primary') or {}
    if bench is not None and set(primary) != set(PRIMARY_KEYS):
        raise ValueError(
            f'{bench_json!r}: "primary" must have the fields '
            f'{list(PRIMARY_KEYS)}, got {sorted(primary)}')

    def pick(key):
        value = meta.get(key)
        return model.get(key) if value is None else value

    if test and bench:
        for key in ('backbone', 'memory_length'):
            a, b = meta.get(key), model.get(key)
            if a is not None and b is not None and a != b:
                raise ValueError(
                    f'run {name!r}: {key} differs between {test_json!r} '
                    f'({a!r}) and {bench_json!r} ({b!r}); are they the same '
                    'model?')
    params = primary.get('params', model.get('params'))
    return dict(
        method=name,
        model=pick('method'),
        backbone=pick('backbone'),
        memory_length=pick('memory_length'),
        mIoU=(test or {}).get('mIoU'),
        mIoU_category=(test or {}).get('mIoU_category'),
        TC=(tc or {}).get('TC'),
        ms_per_frame=primary.get('median_ms'),
        p90_ms=primary.get('p90_ms'),
        fps=primary.get('fps'),
        params_m=None if params is None else round(params / 1e6, 3),
        gflops=primary.get('gflops'),
        mode=primary.get('mode'),
        device=(bench or {}).get('device'),
        shape=('x'.join(str(v) for v in bench['shape'])
               if bench and bench.get('shape') else None),
        split=meta.get('split'),
        test_json=test_json,
        bench_json=bench_json,
        tc_json=tc_json)


def collect_runs(run_dirs: Sequence[str] = (),
                 runs: Sequence[Sequence[Optional[str]]] = (),
                 sort: Optional[str] = None) -> List[dict]:
    """The leaderboard rows of run folders and explicit runs.

    Args:
        run_dirs (Sequence[str]): Folders, see :func:`runs_from_folder`.
        runs (Sequence[tuple]): ``(name, test_json, bench_json)``; ``None``
            or ``'-'`` for a missing part.
        sort (str, optional): A :data:`COLUMNS` key to sort by (descending
            for mIoU, category mIoU, FPS and TC, ascending otherwise; rows
            without a value last); default: input order.

    Returns:
        list[dict]: One row per run (see :func:`make_run`).
    """
    rows = [runs_from_folder(d) for d in run_dirs]
    for name, test, bench in runs:
        rows.append(
            make_run(name, None if test in (None, '-') else test,
                     None if bench in (None, '-') else bench))
    if not rows:
        raise ValueError('no run given: pass RUN_DIRs or --run NAME '
                         'TEST_JSON BENCH_JSON')
    names = [r['method'] for r in rows]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f'several runs are named {dup}; rename the folders '
                         'or use --run with distinct names')
    if sort:
        if sort not in [k for k, _ in COLUMNS]:
            raise ValueError(f'cannot sort by {sort!r}: not a column '
                             f'({[k for k, _ in COLUMNS]})')
        desc = sort in ('mIoU', 'mIoU_category', 'fps', 'TC')
        present = [r for r in rows if r.get(sort) is not None]
        missing = [r for r in rows if r.get(sort) is None]
        rows = sorted(present, key=lambda r: r[sort], reverse=desc) + missing
    return rows


def _cell(value) -> str:
    if value is None:
        return '-'
    if isinstance(value, float):
        return f'{value:.2f}' if abs(value) >= 0.01 or value == 0 else \
            f'{value:.3g}'
    return str(value)


def markdown_table(rows: Sequence[dict]) -> str:
    """The rows as a GitHub markdown table (``-`` where a value is
    missing)."""
    columns = [(k, h) for k, h in COLUMNS if k not in OPTIONAL_COLUMNS
               or any(row.get(k) is not None for row in rows)]
    head = '| ' + ' | '.join(h for _, h in columns) + ' |'
    align = '|' + '|'.join(':---' if k in ('method', 'backbone') else '---:'
                           for k, _ in columns) + '|'
    lines = [head, align]
    for row in rows:
        lines.append('| ' + ' | '.join(_cell(row.get(k))
                                       for k, _ in columns) + ' |')
    return '\n'.join(lines)


def write_csv(path: str, rows: Sequence[dict]) -> str:
    """Write the rows (table columns, then extra columns) as CSV,
    atomically."""
    buf = io.StringIO()
    fields = [k for k, _ in COLUMNS] + CSV_EXTRA
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction='ignore')
    writer.writeheader()
    for row in rows:
        writer.writerow({k: '' if row.get(k) is None else row.get(k)
                         for k in fields})
    return atomic_write_text(path, buf.getvalue())


def plot(path: str, rows: Sequence[dict], title: Optional[str] = None
         ) -> List[str]:
    """Draw mIoU against ms/frame, one labelled point per run (PNG, atomic).

    Returns:
        list[str]: Names of the runs left out of the plot because they lack
        the mIoU or the speed.
    """
    import matplotlib
    matplotlib.use('Agg', force=False)
    import matplotlib.pyplot as plt

    drawn = [r for r in rows
             if r.get('mIoU') is not None and r.get('ms_per_frame')
             is not None]
    left_out = [r['method'] for r in rows if r not in drawn]
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    try:
        for r in drawn:
            marker = 'o' if r.get('model') == 'LMA' else 's'
            ax.scatter(r['ms_per_frame'], r['mIoU'], marker=marker, s=40)
            ax.annotate(
                r['method'], (r['ms_per_frame'], r['mIoU']),
                textcoords='offset points', xytext=(5, 5), fontsize=8)
        ax.set_xlabel('ms/frame (median)')
        ax.set_ylabel('mIoU (%)')
        ax.set_title(title or 'mIoU against inference time')
        ax.grid(True, alpha=0.3)
        if drawn:
            xs = [r['ms_per_frame'] for r in drawn]
            ys = [r['mIoU'] for r in drawn]
            dx = (max(xs) - min(xs)) or max(xs) or 1.0
            dy = (max(ys) - min(ys)) or 1.0
            ax.set_xlim(min(xs) - 0.15 * dx, max(xs) + 0.35 * dx)
            ax.set_ylim(min(ys) - 0.2 * dy, max(ys) + 0.3 * dy)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format='png')
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return left_out
