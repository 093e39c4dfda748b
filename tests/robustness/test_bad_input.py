"""Bad input, end to end: one test per row of the README's "Bad input" table.

Each bad input must give a clear error that names the file, argument or
shape at fault (or a documented, logged policy), never a traceback from deep
inside a kernel, and must not destroy results written before it.
"""
import logging
import os.path as osp
import pickle
import shutil

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS, MODELS

import lma_mmseg  # noqa: F401
from helpers import ROOT
from helpers.tools import run_tool_in_process
from lma_mmseg.apis import init_model
from lma_mmseg.datasets.prep import DemoDataSettings, make_demo_data

DATASET_CFG = osp.join(ROOT, 'configs/_base_/datasets/demo-seq.py')
LMA_MODEL_CFG = osp.join(ROOT, 'configs/_base_/models/lma-erfnet.py')
SEQ = 'leftImg8bit_sequence/train/aachen'
KEY = 'aachen_000000_000019'


class UnrelatedObject:
    """A class no checkpoint loader should instantiate."""

    def __init__(self, payload):
        self.payload = payload


@pytest.fixture(scope='module')
def demo_master(tmp_path_factory):
    root = tmp_path_factory.mktemp('demo_master') / 'demo'
    make_demo_data(
        str(root), DemoDataSettings(size=(64, 128), num_train=2, num_val=1,
                                    num_test=1, frames='memory'))
    return root


@pytest.fixture
def demo(tmp_path, demo_master):
    """A private copy of the demo data that a test may break."""
    root = tmp_path / 'demo'
    shutil.copytree(demo_master, root)
    return root


def build_train_dataset(root, **overrides):
    init_default_scope('mmseg')
    cfg = Config.fromfile(DATASET_CFG).train_dataloader.dataset
    cfg.data_root = str(root)
    cfg.update(overrides)
    return DATASETS.build(cfg)


def sample_of(dataset, key_stem=KEY):
    for idx in range(len(dataset)):
        if osp.basename(
                dataset.get_data_info(idx)['img_path']).startswith(key_stem):
            return idx
    raise AssertionError(f'{key_stem} is not a sample')


# ---------------------------------------------------------------- data
def test_missing_memory_frame_error(demo):
    missing = demo / SEQ / 'aachen_000000_000018_leftImg8bit.png'
    missing.unlink()
    with pytest.raises(FileNotFoundError) as excinfo:
        build_train_dataset(demo)
    msg = str(excinfo.value)
    assert str(missing) in msg and 'offset -1' in msg
    assert "missing_frames='nearest'" in msg


def test_missing_memory_frame_nearest_policy_is_logged(demo):
    (demo / SEQ / 'aachen_000000_000018_leftImg8bit.png').unlink()
    logger = MMLogger.get_current_instance()
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        dataset = build_train_dataset(demo, missing_frames='nearest')
    finally:
        logger.removeHandler(handler)
    info = dataset.get_data_info(sample_of(dataset))
    # frame 18 is replaced by its nearest existing frame; 17 and 19 are
    # equally near and the tie goes to the one nearer the key frame (19)
    assert [osp.basename(p)[:20] for p in info['clip_paths']
            ] == ['aachen_000000_000016', 'aachen_000000_000017', KEY, KEY]
    assert info['frame_offsets'] == (-3, -2, 0)
    warnings = [r.getMessage() for r in records if r.levelno >= 30]
    assert any('replaced by the nearest' in w for w in warnings), warnings


def test_corrupt_png(demo):
    bad = demo / SEQ / 'aachen_000000_000017_leftImg8bit.png'
    bad.write_bytes(bad.read_bytes()[:60])  # truncated
    dataset = build_train_dataset(demo)
    with pytest.raises(OSError) as excinfo:
        dataset[sample_of(dataset)]
    assert f'frame {bad} is corrupt' in str(excinfo.value)


def test_label_outside_class_range(demo):
    label = (demo / 'gtFine/train/aachen' / f'{KEY}_gtFine_labelTrainIds.png')
    seg = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    seg[0, :4] = 255  # the ignore index is fine
    seg[1, :4] = 33  # a labelId, not a trainId
    cv2.imwrite(str(label), seg)
    dataset = build_train_dataset(demo)
    with pytest.raises(ValueError) as excinfo:
        dataset[sample_of(dataset)]
    msg = str(excinfo.value)
    assert str(label) in msg and '[33]' in msg and '[0, 19)' in msg


def test_clip_frames_of_different_sizes(demo):
    odd = demo / SEQ / 'aachen_000000_000016_leftImg8bit.png'
    cv2.imwrite(str(odd), np.zeros((32, 64, 3), np.uint8))
    dataset = build_train_dataset(demo)
    with pytest.raises(ValueError) as excinfo:
        dataset[sample_of(dataset)]
    msg = str(excinfo.value)
    assert 'same size' in msg and f'{odd}: 64x32' in msg


# --------------------------------------------------------------- config
@pytest.mark.parametrize(
    'neck,expected', [
        (dict(window=20), '`window` must be odd'),
        (dict(key_channels=0), 'key_channels'),
        (dict(key_channels=-4), 'key_channels'),
    ])
def test_bad_neck_config(neck, expected):
    init_default_scope('mmseg')
    cfg = Config.fromfile(LMA_MODEL_CFG)
    cfg.model.neck.update(neck)
    cfg.model.decode_head.norm_cfg = dict(type='BN')
    with pytest.raises(ValueError) as excinfo:
        MODELS.build(cfg.model)
    msg = str(excinfo.value)
    assert 'LocalMemoryNeck' in msg and expected in msg
    assert str(list(neck.values())[0]) in msg


# ---------------------------------------------------------- checkpoints
def _small_lma_config(tmp_path):
    config = tmp_path / 'lma.py'
    config.write_text(
        f"""
_base_ = [{LMA_MODEL_CFG!r}]
custom_imports = dict(imports=['lma_mmseg'], allow_failed_imports=False)
default_scope = 'mmseg'
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(decode_head=dict(norm_cfg=norm_cfg))
""")
    return str(config)


def test_checkpoint_from_another_model(tmp_path):
    config = _small_lma_config(tmp_path)
    other = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8),
        torch.nn.Linear(8, 2))
    ckpt = tmp_path / 'resnet_like.pth'
    torch.save(dict(state_dict=other.state_dict()), ckpt)
    with pytest.raises(ValueError) as excinfo:
        init_model(config, str(ckpt))
    msg = str(excinfo.value)
    assert str(ckpt) in msg and 'another model' in msg
    assert 'unexpected in the checkpoint' in msg and '0.weight' in msg


def test_checkpoint_with_unexpected_pickled_object(tmp_path):
    config = _small_lma_config(tmp_path)
    ckpt = tmp_path / 'evil.pth'
    torch.save(
        dict(state_dict=dict(w=torch.zeros(1)), meta=UnrelatedObject('boom')),
        ckpt)
    with pytest.raises(pickle.UnpicklingError) as excinfo:
        init_model(config, str(ckpt))
    msg = str(excinfo.value)
    assert 'Weights only load failed' in msg
    assert 'UnrelatedObject' in msg


def test_refused_checkpoint_error_names_the_file(tmp_path):
    config = _small_lma_config(tmp_path)
    ckpt = tmp_path / 'evil.pth'
    torch.save(dict(meta=UnrelatedObject('boom')), ckpt)
    with pytest.raises(pickle.UnpicklingError) as excinfo:
        init_model(config, str(ckpt))
    assert str(ckpt) in str(excinfo.value)


# ---------------------------------------------------------------- video
def test_empty_video_folder(tmp_path):
    empty = tmp_path / 'frames'
    empty.mkdir()
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'earlier_result.png').write_bytes(b'kept')
    # in this process: tools/infer_video.py's process boundary is checked
    # by tests/tools/test_infer_video.py
    proc = run_tool_in_process('infer_video.py', _small_lma_config(tmp_path),
                               'unused.pth', empty, '--out', out)
    assert proc.returncode == 2
    err = proc.stderr
    assert f'input folder {str(empty)!r} holds no frames' in err
    assert 'Traceback' not in err
    assert (out / 'earlier_result.png').read_bytes() == b'kept'


def test_load_from_another_model_in_training_is_reported(tmp_path):
    """``load_from`` in a training config goes through mmengine's
    non-strict loader: training starts, and the log lists the unexpected
    and missing keys (the policy documented in the README)."""
    from mmengine.runner import load_checkpoint
    init_default_scope('mmseg')
    cfg = Config.fromfile(_small_lma_config(tmp_path))
    model = MODELS.build(cfg.model)
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3))
    ckpt = tmp_path / 'other.pth'
    torch.save(dict(state_dict=other.state_dict()), ckpt)
    logger = MMLogger.get_current_instance()
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        load_checkpoint(model, str(ckpt), map_location='cpu', logger=logger)
    finally:
        logger.removeHandler(handler)
    text = '\n'.join(r.getMessage() for r in records)
    assert 'unexpected key in source state_dict: 0.weight, 0.bias' in text
    assert 'missing keys in source state_dict: backbone.' in text
