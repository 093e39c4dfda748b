"""tools/analysis/temporal_consistency.py end to end on a tiny demo tree,
and its TC column in tools/leaderboard.py."""
import glob
import json
import os.path as osp
import shutil

import pytest
import torch
from mmengine.config import Config

from helpers.tools import run_tool_in_process
from lma_mmseg.datasets.prep import DemoDataSettings, make_demo_data
from lma_mmseg.evaluation.leaderboard import collect_runs

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO_SEQ = osp.join(ROOT, 'configs', '_base_', 'datasets', 'demo-seq.py')
ERFNET_BASE = osp.join(ROOT, 'configs', '_base_', 'models', 'erfnet-split.py')
LMA_BASE = osp.join(ROOT, 'configs', '_base_', 'models', 'lma-erfnet.py')

CONFIG = """
_base_ = [{data!r}, {model!r}]
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(decode_head=dict(norm_cfg=norm_cfg){neck})
test_dataloader = dict(dataset=dict(data_root={data_root!r}))
"""


def _checkpoint(config, path):
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(config).model)
    with torch.no_grad():
        model.decode_head.conv_seg.weight.normal_(0, 5)
    torch.save(dict(state_dict=model.state_dict(), meta={}), str(path))
    return str(path)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('tc_tool')
    moving = tmp / 'demo'
    make_demo_data(
        str(moving), DemoDataSettings(size=(32, 64), seed=2, num_train=1,
                                      num_val=2, num_test=1, frames='memory'))
    # a static copy: frames 16..18 of every val snippet = its key frame 19
    static = tmp / 'static'
    shutil.copytree(moving, static)
    keys = glob.glob(str(static / 'leftImg8bit_sequence' / 'val' / '*' /
                         '*_000019_leftImg8bit.png'))
    assert len(keys) == 2
    for key in keys:
        for frame in (16, 17, 18):
            shutil.copy(key, key.replace('_000019_', f'_{frame:06d}_'))
    out = {}
    for kind, base, neck in (('single', ERFNET_BASE, ''),
                             ('lma', LMA_BASE, ', neck=dict(window=3)')):
        for name, root in (('static', static), ('moving', moving)):
            config = tmp / f'{kind}_{name}.py'
            config.write_text(CONFIG.format(
                data=DEMO_SEQ, model=base, neck=neck, data_root=str(root)))
            out[kind, name] = str(config)
        out[kind, 'ckpt'] = _checkpoint(out[kind, 'static'],
                                        tmp / f'{kind}.pth')
    out['tmp'] = tmp
    return out


def _run_in_process(*args):
    """The tool in this process (its process boundary is not what these
    tests check)."""
    proc = run_tool_in_process('analysis/temporal_consistency.py', *args,
                               threads=1)
    return proc.returncode, proc.stdout + proc.stderr


def test_static_video_gives_100_and_leaderboard_column(setup):
    run_dir = setup['tmp'] / 'erfnet_static'
    rc, log = _run_in_process(setup['single', 'static'],
                              setup['single', 'ckpt'], '--out', str(run_dir))
    assert rc == 0, log[-3000:]
    data = json.loads((run_dir / 'temporal_consistency.json').read_text())
    assert data['kind'] == 'lma_mmseg.temporal_consistency'
    assert data['TC'] == 100.0
    # 2 snippets x the 4 frames up to the key frame -> 3 pairs each
    assert data['pairs'] == 6 and data['snippets'] == 2
    assert data['offsets'] == [-3, -2, -1, 0]
    assert data['flow'] == dict(type='DISFlow', preset='medium')
    assert data['meta']['method'] == 'single-frame'
    assert 'TC: 100.0 (6 frame pairs of 2 snippets' in log

    assert collect_runs([str(run_dir)])[0]['TC'] == 100.0
    proc = run_tool_in_process('leaderboard.py', str(run_dir), '--out-dir',
                               str(setup['tmp'] / 'board'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (setup['tmp'] / 'board' / 'leaderboard.csv').read_text()
    assert table.splitlines()[0].split(',')[:6] == [
        'method', 'backbone', 'memory_length', 'mIoU', 'mIoU_category', 'TC'
    ]


def test_memory_model_streams_with_warmup(setup):
    run_dir = setup['tmp'] / 'lma_moving'
    rc, log = _run_in_process(setup['lma', 'moving'], setup['lma', 'ckpt'],
                              '--offsets', '-4', '-2', '0', '--warmup', '2',
                              '--out', str(run_dir))
    assert rc == 0, log[-3000:]
    data = json.loads((run_dir / 'temporal_consistency.json').read_text())
    assert data['pairs'] == 4 and data['warmup'] == 2
    assert data['meta']['method'] == 'LMA'
    assert 0 <= data['TC'] <= 100
    assert len(data['per_class_iou']) == 19


def test_bad_arguments_are_named(setup):
    rc, log = _run_in_process(setup['single', 'static'],
                              setup['single', 'ckpt'], '--flow', 'raft')
    assert rc == 2 and '--raft-weights' in log
    rc, log = _run_in_process(setup['single', 'moving'],
                              setup['single', 'ckpt'], '--num-frames', '12')
    # frames 10..19 exist: offset -11 (frame 8) does not
    assert rc != 0 and '_000008_leftImg8bit.png' in log
