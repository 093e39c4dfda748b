"""tools/leaderboard.py on results written by the metric and the benchmark."""
import csv
import json
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.structures import PixelData
from mmseg.datasets import CityscapesDataset
from mmseg.structures import SegDataSample
from PIL import Image

import lma_mmseg  # noqa: F401
from helpers import ROOT
from helpers.tools import run_tool_in_process
from lma_mmseg.benchmarks import (ModelProblem, describe_model,
                                  run_model_benchmark)
from lma_mmseg.evaluation import CityscapesLeaderboardMetric
from lma_mmseg.evaluation.leaderboard import collect_runs
from lma_mmseg.fileio import atomic_write_json

LMA = osp.join(ROOT, 'configs', '_base_', 'models', 'lma-erfnet.py')
ERFNET = osp.join(ROOT, 'configs', '_base_', 'models', 'erfnet-split.py')


def write_test_json(path, config, accuracy, seed):
    """Metric JSON of random predictions that are right ``accuracy`` of the
    time."""
    rng = np.random.default_rng(seed)
    metric = CityscapesLeaderboardMetric(
        results_file=str(path),
        meta=dict(config=config, split='val',
                  **describe_model(Config.fromfile(config).model)))
    metric.dataset_meta = dict(classes=CityscapesDataset.METAINFO['classes'])
    gt = rng.integers(0, 19, (32, 64))
    pred = np.where(rng.random(gt.shape) < accuracy, gt,
                    rng.integers(0, 19, gt.shape))
    sample = SegDataSample(
        metainfo=dict(img_path='frankfurt_000000_000019_leftImg8bit.png'))
    sample.pred_sem_seg = PixelData(data=torch.from_numpy(pred)[None])
    sample.gt_sem_seg = PixelData(data=torch.from_numpy(gt)[None])
    metric.process({}, [sample.to_dict()])
    return metric.evaluate(1)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('leaderboard')
    out = {}
    for name, config, modes, acc in (('erfnet', ERFNET, 'single', 0.5),
                                     ('lma-erfnet', LMA, 'reencode', 0.7)):
        folder = tmp / name
        folder.mkdir()
        metrics = write_test_json(folder / 'cityscapes_metrics.json', config,
                                  acc, seed=len(name))
        res = run_model_benchmark(
            ModelProblem(
                config, modes=[modes], shape=(32, 64), frames=2, warmup=0),
            threads=1, progress=False)
        atomic_write_json(folder / 'benchmark.json', res)
        (folder / 'notes.json').write_text('{"unrelated": true}')
        out[name] = dict(folder=folder, metrics=metrics, bench=res)
    return tmp, out


def test_leaderboard_from_run_folders(runs):
    tmp, out = runs
    folders = [str(out['erfnet']['folder']), str(out['lma-erfnet']['folder'])]
    proc = run_tool_in_process(
        'leaderboard.py', *folders, '--out-dir', tmp / 'board', '--md',
        tmp / 'board' / 'b.md', '--sort', 'mIoU')
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = proc.stdout
    rows = collect_runs(folders, sort='mIoU')
    assert [r['method'] for r in rows] == ['lma-erfnet', 'erfnet']
    lma, erf = rows
    assert lma['mIoU'] == out['lma-erfnet']['metrics']['mIoU']
    assert lma['mIoU_category'] == out['lma-erfnet']['metrics'][
        'mIoU_category']
    assert lma['model'] == 'LMA' and lma['memory_length'] == 3
    assert lma['backbone'] == 'ERFNetEncoder'
    assert erf['model'] == 'single-frame' and erf['memory_length'] == 0
    primary = out['lma-erfnet']['bench']['primary']
    assert lma['ms_per_frame'] == primary['median_ms']
    assert lma['fps'] == primary['fps']
    assert lma['params_m'] == round(primary['params'] / 1e6, 3)

    lines = printed.splitlines()
    header = ('| method | backbone | memory length | mIoU | category mIoU '
              '| ms/frame | FPS | params (M) | GFLOPs |')
    assert header in lines
    row = lines[lines.index(header) + 2]
    assert row.startswith('| lma-erfnet | ERFNetEncoder | 3 | '
                          f'{lma["mIoU"]:.2f} |')
    assert (tmp / 'board' / 'b.md').read_text().startswith(header)

    with open(tmp / 'board' / 'leaderboard.csv') as f:
        table = list(csv.DictReader(f))
    assert [r['method'] for r in table] == ['lma-erfnet', 'erfnet']
    assert float(table[1]['ms_per_frame']) == erf['ms_per_frame']
    assert table[0]['mode'] == 'reencode' and table[0]['device'] == 'cpu'
    assert table[0]['shape'] == '32x64'

    img = Image.open(tmp / 'board' / 'leaderboard.png')
    assert img.format == 'PNG' and img.size == (768, 576)
    # two coloured markers on a white canvas
    assert len(np.unique(np.array(img.convert('RGB')).reshape(-1, 3),
                         axis=0)) > 10


def test_leaderboard_explicit_runs_and_missing_parts(runs):
    tmp, out = runs
    erf = out['erfnet']['folder']
    explicit = [
        ('erf-acc-only', str(erf / 'cityscapes_metrics.json'), '-'),
        ('erf', str(erf / 'cityscapes_metrics.json'),
         str(erf / 'benchmark.json'))
    ]
    # the command line once more, in this process (its process boundary is
    # the test above's)
    proc = run_tool_in_process(
        'leaderboard.py', '--run', *explicit[0], '--run', *explicit[1],
        '--out-dir', tmp / 'board2')
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = proc.stdout
    rows = collect_runs(runs=explicit)
    assert rows[0]['ms_per_frame'] is None and rows[0]['mIoU'] is not None
    assert '| erf-acc-only | ERFNetEncoder | 0 |' in printed
    assert 'not in the plot (no mIoU or no speed): erf-acc-only' in printed
    assert (tmp / 'board2' / 'leaderboard.png').is_file()


def test_leaderboard_errors(runs, tmp_path):
    _, out = runs
    with pytest.raises(ValueError, match='no run given'):
        collect_runs()
    # two test results in one folder
    twice = tmp_path / 'twice'
    twice.mkdir()
    text = (out['erfnet']['folder'] / 'cityscapes_metrics.json').read_text()
    (twice / 'a.json').write_text(text)
    (twice / 'b.json').write_text(text)
    with pytest.raises(ValueError, match='several lma_mmseg.test'):
        collect_runs([str(twice)])
    # accuracy and speed of different models
    with pytest.raises(ValueError, match='backbone differs'):
        collect_runs(runs=[(
            'mixed',
            str(out['erfnet']['folder'] / 'cityscapes_metrics.json'),
            str(_with_backbone(out['erfnet']['folder'] / 'benchmark.json',
                               tmp_path / 'b.json', 'ERFNet')))])
    with pytest.raises(ValueError, match='expected'):
        collect_runs(runs=[(
            'swapped', str(out['erfnet']['folder'] / 'benchmark.json'), '-')])
    fmt = tmp_path / 'fmt.json'
    fmt.write_text(json.dumps(dict(kind='lma_mmseg.test', format_only=True)))
    with pytest.raises(ValueError, match='format-only'):
        collect_runs(runs=[('f', str(fmt), '-')])
    with pytest.raises(ValueError, match='several runs are named'):
        folder = str(out['erfnet']['folder'])
        collect_runs([folder, folder])


def _with_backbone(src, dst, backbone):
    data = json.loads(src.read_text())
    data['model']['backbone'] = backbone
    dst.write_text(json.dumps(data))
    return dst
