"""The demo configs train end to end with our tools/train.py and with
mmseg's own tools/train.py (which knows nothing about lma_mmseg: it works
because the configs carry the ``custom_imports``/``default_scope`` lines):
single-frame ERFNet, then LMA-ERFNet from its checkpoint, each with a
validation mIoU logged (a few iterations on tiny demo data)."""
import glob
import json
import os.path as osp
import subprocess
import sys

import mmseg
import pytest

from helpers import ROOT
from helpers.tools import run_tool_in_process, tool_env
from lma_mmseg.datasets.prep import DemoDataSettings, make_demo_data

TRAIN = osp.join(ROOT, 'tools', 'train.py')
MMSEG_TRAIN = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools',
                       'train.py')
TRAINERS = dict(ours=TRAIN, mmseg=MMSEG_TRAIN)
ERFNET = osp.join(ROOT, 'configs', 'demo', 'erfnet_demo.py')
LMA = osp.join(ROOT, 'configs', 'demo', 'lma-erfnet_demo.py')
ITERS = 2


def _run(tool, args, fresh=False):
    """Run a training script in this process, or (``fresh``) in a fresh
    interpreter that has never imported lma_mmseg: mmseg's own
    tools/train.py on the LMA config, whose ``custom_imports`` must then
    register our components (the single-frame runs' process boundary is
    not what these tests check)."""
    if not fresh:
        proc = run_tool_in_process(tool, *args)
    else:
        proc = subprocess.run([sys.executable, tool] + args,
                              env=tool_env(OMP_WAIT_POLICY='PASSIVE'),
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


def _train(tool, config, work_dir, data_root, extra=(), fresh=False):
    """Train ``config`` with ``tool`` (``fresh``: see :func:`_run`); check
    the checkpoint, the logged iterations and the validation mIoU; return
    the log."""
    log = _run(tool, [config, '--work-dir', work_dir] +
               _options(data_root, extra), fresh=fresh)
    assert osp.isfile(osp.join(work_dir, f'iter_{ITERS}.pth'))
    assert f'Iter(train) [{ITERS}/{ITERS}]' in log
    (metrics, ) = _val_metrics(work_dir)
    assert 0 <= metrics['mIoU'] <= 100
    return log


@pytest.fixture(scope='module')
def erfnet_run(tmp_path_factory):
    """Demo data and a single-frame ERFNet trained on it by our
    tools/train.py (the start of the LMA runs)."""
    tmp = tmp_path_factory.mktemp('demo_train')
    data_root = str(tmp / 'demo')
    make_demo_data(
        data_root,
        DemoDataSettings(size=(32, 64), seed=0, num_train=4, num_val=2,
                         num_test=1, frames='memory'))
    work_dir = str(tmp / 'erfnet_ours')
    _train(TRAIN, ERFNET, work_dir, data_root)
    return dict(data_root=data_root,
                ckpt=osp.join(work_dir, f'iter_{ITERS}.pth'))


@pytest.mark.slow
def test_mmseg_train_script_runs_the_single_frame_demo(erfnet_run,
                                                       tmp_path):
    assert osp.isfile(MMSEG_TRAIN), MMSEG_TRAIN
    _train(MMSEG_TRAIN, ERFNET, str(tmp_path / 'erfnet_mmseg'),
           erfnet_run['data_root'])


@pytest.mark.slow
@pytest.mark.parametrize('trainer', ['ours', 'mmseg'])
def test_lma_demo_trains_from_the_single_frame_checkpoint(
        erfnet_run, trainer, tmp_path):
    ckpt = erfnet_run['ckpt']
    log = _train(TRAINERS[trainer], LMA, str(tmp_path / f'lma_{trainer}'),
                 erfnet_run['data_root'], [f'load_from={ckpt}'],
                 fresh=trainer == 'mmseg')
    assert f'Load checkpoint from {ckpt}' in log
