"""The demo configs train end to end with tools/train.py and mmseg's own
tools/train.py: single-frame ERFNet, then LMA-ERFNet from its checkpoint,
each with a validation mIoU logged (a few iterations on tiny demo data)."""
import glob
import json
import os.path as osp
import subprocess
import sys

import mmseg
import pytest

from helpers import ROOT
from helpers.tools import tool_env

TRAIN = osp.join(ROOT, 'tools', 'train.py')
MMSEG_TRAIN = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools',
                       'train.py')
ITERS = 4


def _run(args, cwd):
    """Run a training script (ours or mmseg's) with this interpreter."""
    env = tool_env(OMP_WAIT_POLICY='PASSIVE')
    proc = subprocess.run([sys.executable] + args,
                          cwd=cwd,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _val_metrics(work_dir):
    """The validation metrics mmengine logged to vis_data/scalars.json."""
    (scalars, ) = glob.glob(osp.join(work_dir, '*', 'vis_data',
                                     'scalars.json'))
    with open(scalars) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r for r in records if 'mIoU' in r]


def _options(data_root, extra=()):
    opts = [
        f'train_cfg.max_iters={ITERS}', f'train_cfg.val_interval={ITERS}',
        f'default_hooks.checkpoint.interval={ITERS}',
        f'param_scheduler.0.end={ITERS}', 'train_dataloader.batch_size=2',
        'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'val_dataloader.num_workers=0',
        'val_dataloader.persistent_workers=False',
        'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False'
    ]
    for loader in ('train', 'val', 'test'):
        opts.append(f'{loader}_dataloader.dataset.data_root={data_root}')
    return ['--cfg-options'] + opts + list(extra)


@pytest.mark.slow
def test_demo_configs_train_and_log_miou(tmp_path):
    data_root = str(tmp_path / 'demo')
    _run([
        osp.join(ROOT, 'tools', 'make_demo_data.py'), '--out', data_root,
        '--num-train', '4', '--num-val', '2', '--num-test', '1', '--frames',
        'memory'
    ], ROOT)

    erf_dir = str(tmp_path / 'erfnet_demo')
    _run([
        TRAIN,
        osp.join(ROOT, 'configs', 'demo', 'erfnet_demo.py'), '--work-dir',
        erf_dir
    ] + _options(data_root), ROOT)
    ckpt = osp.join(erf_dir, f'iter_{ITERS}.pth')
    assert osp.isfile(ckpt)
    (metrics, ) = _val_metrics(erf_dir)
    assert 0 <= metrics['mIoU'] <= 100

    for name, tool in (('ours', TRAIN), ('mmseg', MMSEG_TRAIN)):
        lma_dir = str(tmp_path / f'lma_{name}')
        log = _run([
            tool,
            osp.join(ROOT, 'configs', 'demo', 'lma-erfnet_demo.py'),
            '--work-dir', lma_dir
        ] + _options(data_root, [f'load_from={ckpt}']), ROOT)
        assert f'Load checkpoint from {ckpt}' in log
        assert osp.isfile(osp.join(lma_dir, f'iter_{ITERS}.pth'))
        (metrics, ) = _val_metrics(lma_dir)
        assert 0 <= metrics['mIoU'] <= 100
