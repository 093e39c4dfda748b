"""tools/test.py end to end on a tiny synthetic demo tree.

The generator of the demo data writes the Cityscapes layout (key frames in
leftImg8bit/, gtFine labelIds and labelTrainIds); a randomly initialised
ERFNet (our encoder/decoder split) is tested on it through the mmengine
Runner, and its labelIds export is evaluated again by cityscapesscripts.
"""
import glob
import json
import os.path as osp
import re
import zipfile

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

import lma_mmseg  # noqa: F401
from helpers import ROOT
from helpers.tools import run_tool_in_process
from lma_mmseg.datasets.prep import DemoDataSettings, make_demo_data
from lma_mmseg.evaluation.test_config import build_test_cfg, switch_split

ERFNET_BASE = osp.join(ROOT, 'configs', '_base_', 'models', 'erfnet-split.py')
LMA_BASE = osp.join(ROOT, 'configs', '_base_', 'models', 'lma-erfnet.py')
DEMO_SEQ = osp.join(ROOT, 'configs', '_base_', 'datasets', 'demo-seq.py')


CONFIG = """
_base_ = [{base!r}]
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(decode_head=dict(norm_cfg=norm_cfg))
default_scope = 'mmseg'
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork'),
               dist_cfg=dict(backend='gloo'))
log_level = 'INFO'
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=100),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
visualizer = dict(type='SegLocalVisualizer',
                  vis_backends=[dict(type='LocalVisBackend')],
                  name='visualizer')
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
test_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='CityscapesDataset', data_root={data_root!r},
        data_prefix=dict(img_path='leftImg8bit/val',
                         seg_map_path='gtFine/val'),
        pipeline=test_pipeline))
test_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_cfg = dict(type='TestLoop')
"""


LMA_CONFIG = """
_base_ = [{data!r}, {model!r}]
default_scope = 'mmseg'
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(decode_head=dict(norm_cfg=norm_cfg))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork'),
               dist_cfg=dict(backend='gloo'))
log_level = 'INFO'
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    visualization=dict(type='SegVisualizationHook'))
visualizer = dict(type='SegLocalVisualizer',
                  vis_backends=[dict(type='LocalVisBackend')],
                  name='visualizer')
train_dataloader = None
val_dataloader = None
val_evaluator = None
test_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root={data_root!r}))
test_cfg = dict(type='TestLoop')
"""


def build_checkpoint(config, path):
    """Random weights whose classifier predicts several classes."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    cfg = Config.fromfile(config)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    with torch.no_grad():
        model.decode_head.conv_seg.weight.normal_(0, 5)
    torch.save(dict(state_dict=model.state_dict(), meta={}), str(path))
    return str(path)


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    """Tiny demo tree, a config over its key frames and a checkpoint."""
    tmp = tmp_path_factory.mktemp('test_tool')
    data_root = tmp / 'demo'
    make_demo_data(
        str(data_root), DemoDataSettings(size=(64, 128), seed=1, num_train=1,
                                         num_val=3, num_test=2,
                                         frames='memory'))
    # the tool reads the key frames from leftImg8bit/ (single frame)
    for split in ('val', 'test'):
        assert glob.glob(
            str(data_root / 'leftImg8bit' / split / '*' / '*.png'))
    config = tmp / 'erfnet_tiny.py'
    config.write_text(
        CONFIG.format(base=ERFNET_BASE, data_root=str(data_root)))
    lma_config = tmp / 'lma_tiny.py'
    lma_config.write_text(
        LMA_CONFIG.format(
            data=DEMO_SEQ, model=LMA_BASE, data_root=str(data_root)))
    return dict(
        tmp=tmp, data_root=data_root,
        single=dict(config=str(config),
                    ckpt=build_checkpoint(str(config), tmp / 'erfnet.pth')),
        lma=dict(config=str(lma_config),
                 ckpt=build_checkpoint(str(lma_config), tmp / 'lma.pth')))


@pytest.mark.parametrize('kind', ['single', 'lma'])
def test_val_metrics_json_and_cityscapes_crosscheck(demo, kind):
    out = demo['tmp'] / f'val_out_{kind}'
    show = demo['tmp'] / f'show_{kind}'
    args = ('test.py', demo[kind]['config'], demo[kind]['ckpt'], '--work-dir',
            demo['tmp'] / 'work', '--out', out, '--show-dir', show)
    # in this process: tools/dist_test.sh starts tools/test.py as processes
    # (tests/engine/test_dist_train.py)
    proc = run_tool_in_process(*args)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    # the metrics the Runner logs: "Epoch(test) [3/3]  aAcc: ... mIoU: ..."
    log = proc.stdout + proc.stderr
    lines = [
        line for line in log.splitlines()
        if '(test) [' in line and ' mIoU: ' in line
    ]
    assert len(lines) == 1, log[-3000:]
    line = lines[0]
    metrics = {
        k: float(v)
        for k, v in re.findall(r'([\w.]+): (-?\d+(?:\.\d+)?)\b', line)
    }
    for key in ('mIoU', 'aAcc', 'mAcc', 'mIoU_category', 'IoU.flat',
                'IoU.vehicle'):
        assert key in metrics
    data = json.loads((out / 'cityscapes_metrics.json').read_text())
    assert data['kind'] == 'lma_mmseg.test'
    assert data['num_images'] == 3
    assert data['meta']['split'] == 'val'
    assert data['meta']['backbone'] == 'ERFNetEncoder'
    assert data['meta']['method'] == {'single': 'single-frame',
                                      'lma': 'LMA'}[kind]
    assert data['meta']['memory_length'] == {'single': 0, 'lma': 3}[kind]
    assert data['mIoU'] == pytest.approx(metrics['mIoU'], abs=0.01)
    assert len(data['classes']) == 19 and len(data['categories']) == 7

    # cityscapesscripts on the exported labelIds PNGs and gtFine labelIds
    preds = sorted(glob.glob(str(out / '*' / '*_leftImg8bit.png')))
    gts = sorted(
        glob.glob(
            str(demo['data_root'] / 'gtFine' / 'val' / '*' /
                '*_gtFine_labelIds.png')))
    assert len(preds) == len(gts) == 3
    from cityscapesscripts.evaluation import \
        evalPixelLevelSemanticLabeling as CSEval
    args = CSEval.args
    args.predictionPath = str(out)
    args.predictionWalk = None
    args.evalInstLevelScore = False
    args.JSONOutput = False
    args.quiet = True
    pred_for_gt = [CSEval.getPrediction(args, gt) for gt in gts]
    assert pred_for_gt == preds
    theirs = CSEval.evaluateImgLists(pred_for_gt, gts, args)
    assert data['mIoU'] == pytest.approx(
        100 * theirs['averageScoreClasses'], abs=0.01)
    assert data['mIoU_category'] == pytest.approx(
        100 * theirs['averageScoreCategories'], abs=0.01)
    # several classes predicted, so the comparison is not trivial
    values = np.unique(np.concatenate(
        [np.array(Image.open(p)).ravel() for p in preds]))
    assert len(values) >= 3

    overlays = glob.glob(str(show / '**' / '*.png'), recursive=True)
    assert len(overlays) == 3
    img = np.array(Image.open(overlays[0]))
    assert img.ndim == 3 and img.shape[2] == 3 and img.shape[0] == 64


@pytest.mark.parametrize('kind', ['single', 'lma'])
def test_format_only_on_test_split(demo, kind):
    out = demo['tmp'] / f'submission_{kind}'
    # in this process, as the test above
    proc = run_tool_in_process(
        'test.py', demo[kind]['config'], demo[kind]['ckpt'], '--work-dir',
        demo['tmp'] / 'work', '--format-only', '--out', out)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    # the Runner's log was captured, and nothing is evaluated
    assert 'Load checkpoint from' in log
    assert 'per class results' not in log
    pngs = sorted(
        osp.relpath(p, out) for p in glob.glob(str(out / '*' / '*.png')))
    assert pngs == [
        'berlin/berlin_000000_000019_leftImg8bit.png',
        'bielefeld/bielefeld_000000_000019_leftImg8bit.png'
    ]
    label_ids = {7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27,
                 28, 31, 32, 33}
    for p in pngs:
        img = np.array(Image.open(out / p))
        assert img.shape == (64, 128) and img.dtype == np.uint8
        assert set(np.unique(img)) <= label_ids
    with zipfile.ZipFile(out / 'cityscapes_submission.zip') as zf:
        assert sorted(zf.namelist()) == pngs
    data = json.loads((out / 'cityscapes_metrics.json').read_text())
    assert data['format_only'] and data['meta']['split'] == 'test'


def test_split_switch_errors(demo):
    cfg = Config(
        dict(dataset=dict(type='X', data_prefix=dict(img_path='a/b'))))
    with pytest.raises(ValueError, match='data_prefix'):
        switch_split(cfg.dataset, 'test')
    cfg = Config(dict(dataset=dict(
        type='X', data_prefix=dict(img_path='leftImg8bit_sequence/val/',
                                   seg_map_path='gtFine/val'))))
    switch_split(cfg.dataset, 'test')
    assert cfg.dataset.data_prefix == dict(
        img_path='leftImg8bit_sequence/test', seg_map_path='gtFine/test')
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        build_test_cfg(demo['single']['config'], 'nope.pth')
