"""Frame folders that would make one output overwrite another, or hold a
folder named like a frame: refused, naming the files, in every tool that
reads frame folders (tools/infer_video.py, tools/deploy/stream_exported.py,
and the video datasets behind tools/analysis/temporal_consistency.py)."""
import os.path as osp
import shutil

import cv2
import numpy as np
import pytest
import torch
from hostile_inputs import load_tool
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS

from helpers import ROOT
from lma_mmseg.apis import init_model
from lma_mmseg.apis.video_io import InputError, list_frames
from lma_mmseg.datasets.prep import DemoDataSettings, make_demo_data
from lma_mmseg.utils import run_main

DEMO_CONFIG = osp.join(ROOT, 'configs/demo/lma-erfnet_demo.py')
VAL = 'leftImg8bit_sequence/val/frankfurt'


@pytest.fixture(scope='module')
def folder_tools():
    return dict(
        infer=load_tool('infer_video.py'),
        stream=load_tool('deploy/stream_exported.py'),
        tc=load_tool('analysis/temporal_consistency.py'))


@pytest.fixture(scope='module')
def demo_master(tmp_path_factory):
    root = tmp_path_factory.mktemp('demo') / 'demo'
    make_demo_data(
        str(root),
        DemoDataSettings(
            size=(64, 128),
            num_train=1,
            num_val=1,
            num_test=1,
            frames='memory'))
    return root


@pytest.fixture(scope='module')
def demo_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = init_model(DEMO_CONFIG, device='cpu')
    path = tmp_path_factory.mktemp('demo_ckpt') / 'lma-erfnet_demo.pth'
    torch.save(dict(state_dict=model.state_dict()), path)
    return path


def frames(tmp_path, names):
    folder = tmp_path / 'frames'
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in names:
        cv2.imwrite(
            str(folder / name),
            rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    return folder


def run(folder_tools, key, prog, args, capsys):
    status = run_main(
        folder_tools[key].main, [str(a) for a in args], prog=prog)
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'{prog}: error: '), err
    return status, lines[0]


def build_val_dataset(root):
    init_default_scope('mmseg')
    from mmengine.config import Config
    cfg = Config.fromfile(DEMO_CONFIG).test_dataloader.dataset
    cfg.data_root = str(root)
    cfg.pipeline = []
    return DATASETS.build(cfg)


def test_two_frames_with_one_name_are_refused(
        tmp_path, exported, demo_master, demo_checkpoint, folder_tools,
        capsys):
    folder = frames(tmp_path, ['f000.png', 'f000.jpg', 'f001.png'])
    both = f"'{folder / 'f000.jpg'}' and '{folder / 'f000.png'}'"
    with pytest.raises(InputError) as excinfo:
        list_frames(str(folder))
    assert both in str(excinfo.value)
    out = tmp_path / 'out'
    status, line = run(
        folder_tools, 'infer', 'infer_video.py',
        [exported['config'], exported['checkpoint'], folder, '--out', out],
        capsys)
    assert status == 2 and both in line and not out.exists()
    status, line = run(
        folder_tools, 'stream', 'stream_exported.py',
        [exported['folder'], folder, '--out', out], capsys)
    assert status == 2 and both in line and not out.exists()

    # a snippet with two files of one frame number (18 and 000018)
    root = tmp_path / 'demo'
    shutil.copytree(demo_master, root)
    first = root / VAL / 'frankfurt_000000_000018_leftImg8bit.png'
    second = root / VAL / 'frankfurt_000000_18_leftImg8bit.png'
    shutil.copy(first, second)
    with pytest.raises(ValueError) as excinfo:
        build_val_dataset(root)
    assert f'{first} and {second} are both frame 18' in str(excinfo.value)
    status, line = run(
        folder_tools, 'tc', 'temporal_consistency.py', [
            DEMO_CONFIG, demo_checkpoint, '--cfg-options',
            f'test_dataloader.dataset.data_root={root}'
        ], capsys)
    assert status == 2 and f'{first} and {second}' in line


def test_folder_named_like_a_frame_is_refused(
        tmp_path, exported, demo_master, folder_tools, capsys):
    folder = frames(tmp_path, ['f000.png', 'f002.png'])
    (folder / 'f001.png').mkdir()
    with pytest.raises(InputError, match='not a file'):
        list_frames(str(folder))
    out = tmp_path / 'out'
    status, line = run(
        folder_tools, 'stream', 'stream_exported.py',
        [exported['folder'], folder, '--out', out], capsys)
    assert status == 2 and f"'{folder / 'f001.png'}'" in line
    assert 'not a file' in line
    status, line = run(
        folder_tools, 'infer', 'infer_video.py',
        [exported['config'], exported['checkpoint'], folder, '--out', out],
        capsys)
    assert status == 2 and 'not a file' in line and not out.exists()

    root = tmp_path / 'demo'
    shutil.copytree(demo_master, root)
    (root / VAL / 'frankfurt_000000_000005_leftImg8bit.png').mkdir()
    with pytest.raises(ValueError, match='not a file'):
        build_val_dataset(root)
