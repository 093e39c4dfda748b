"""tools/test.py on a tiny synthetic VSPW-layout tree: mIoU, VC_8, VC_16."""
import json
import os
import os.path as osp

import torch
from mmengine.config import Config

import lma_mmseg  # noqa: F401
from helpers.tools import run_tool_in_process
from helpers.vspw_tree import make_vspw_tree

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
VSPW_BASE = osp.join(ROOT, 'configs', '_base_', 'datasets', 'vspw.py')
LMA_BASE = osp.join(ROOT, 'configs', '_base_', 'models', 'lma-erfnet.py')

CONFIG = """
_base_ = [{data!r}, {model!r}]
default_scope = 'mmseg'
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(decode_head=dict(num_classes=124, norm_cfg=norm_cfg),
             neck=dict(window=3), memory_offsets=(-9, -6, -3))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork'),
               dist_cfg=dict(backend='gloo'))
log_level = 'INFO'
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False))
train_dataloader = None
val_dataloader = None
val_evaluator = None
test_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root={data_root!r}, pipeline=[
        dict(type='LoadClipFromFiles'), dict(type='PackClipSegInputs')]))
test_cfg = dict(type='TestLoop')
"""


def test_vspw_test_prints_miou_and_video_consistency(tmp_path):
    data_root = tmp_path / 'VSPW_480p'
    os.makedirs(data_root)
    make_vspw_tree(str(data_root))
    config = tmp_path / 'lma_vspw_tiny.py'
    config.write_text(
        CONFIG.format(data=VSPW_BASE, model=LMA_BASE,
                      data_root=str(data_root)))
    cfg = Config.fromfile(str(config))
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    ckpt = tmp_path / 'lma.pth'
    torch.save(dict(state_dict=model.state_dict(), meta={}), str(ckpt))

    out = tmp_path / 'out'
    # in this process (tools/test.py's process boundary is checked by
    # tests/tools/test_test_tool.py), on one thread as the process was
    proc = run_tool_in_process('test.py', config, ckpt, '--work-dir',
                               tmp_path / 'work', '--out', out, threads=1)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    for key in ('mIoU', 'VC_8', 'VC_16'):
        assert key in log, log[-3000:]
    # the two val videos have 20 and 18 frames: VSPW toolkit windows
    # range(L - n) give 12 + 10 windows of 8 and 4 + 2 windows of 16
    assert 'VC_8: ' in log and 'over 22 windows of 2 videos' in log
    assert 'over 6 windows of 2 videos' in log
    data = json.loads((out / 'metrics.json').read_text())
    assert data['kind'] == 'lma_mmseg.test'
    for key in ('mIoU', 'VC_8', 'VC_16'):
        assert isinstance(data[key], float), data
        assert 0 <= data[key] <= 100
    assert data['meta']['method'] == 'LMA'
