"""Our configs run unchanged under mmseg's own training script.

mmseg ships ``tools/train.py`` inside the package (``mmseg/.mim/tools``); it
knows nothing about lma_mmseg, so this only works when the configs carry the
``custom_imports``/``default_scope`` lines that register our components.
"""
import os.path as osp
import subprocess
import sys

import mmseg
import pytest

from helpers import ROOT as REPO
from lma_mmseg.datasets.synthetic import make_demo_data

MIM_TRAIN = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools', 'train.py')


@pytest.fixture(scope='module')
def tiny_demo(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('demo'))
    make_demo_data(
        root, size=(32, 64), seed=0, num_train=4, num_val=1, num_test=1)
    return root


@pytest.mark.parametrize('config', [
    'configs/demo/erfnet_demo.py',
    'configs/demo/lma-erfnet_demo.py',
])
def test_mmseg_train_script_runs_our_config(config, tiny_demo, tmp_path):
    assert osp.isfile(MIM_TRAIN), MIM_TRAIN
    work_dir = tmp_path / 'work'
    options = [
        'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
        'default_hooks.checkpoint.interval=2', 'load_from=None',
        'train_dataloader.batch_size=2'
    ] + [
        f'{split}_dataloader.dataset.data_root={tiny_demo}'
        for split in ('train', 'val', 'test')
    ]
    proc = subprocess.run(
        [
            sys.executable, MIM_TRAIN,
            osp.join(REPO, config), '--work-dir',
            str(work_dir), '--cfg-options', *options
        ],
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (work_dir / 'iter_2.pth').is_file()
    log = proc.stdout + proc.stderr
    assert 'Iter(train) [2/2]' in log
    assert 'mIoU' in log
