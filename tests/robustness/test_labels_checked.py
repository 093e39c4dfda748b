"""Labels with values outside the class range are refused by every config
of ours, single-frame ones included (mmseg's ``LoadAnnotations`` passes them
on and ``IoUMetric`` leaves them out of the mIoU without a word)."""
import glob
import os.path as osp

import cv2
import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS

import lma_mmseg  # noqa: F401  (registers the components)
from helpers import ROOT
from helpers.vspw_tree import make_vspw_tree
from lma_mmseg.datasets import VideoSegDataset

CONFIGS = sorted(
    osp.relpath(p, ROOT) for p in glob.glob(
        osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in osp.relpath(p, ROOT).split(osp.sep))
#: label loaders that check the class range
CHECKED = {'LoadCheckedAnnotations', 'LoadClipAnnotations'}


def transforms(pipeline):
    """Every transform of a pipeline, nested ones (broadcasters, TTA)
    included."""
    for t in pipeline or []:
        if isinstance(t, (list, tuple)):
            yield from transforms(t)
            continue
        yield t
        yield from transforms(t.get('transforms'))


def innermost(dataset):
    while 'dataset' in dataset:
        dataset = dataset.dataset
    return dataset


@pytest.mark.parametrize('rel', CONFIGS)
def test_config_loads_labels_through_a_checked_loader(rel):
    init_default_scope('mmseg')
    cfg = Config.fromfile(osp.join(ROOT, rel))
    loaders = []
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if not cfg.get(key):
            continue
        dataset = innermost(cfg[key].dataset)
        video = issubclass(DATASETS.get(dataset.type), VideoSegDataset)
        for t in transforms(dataset.pipeline):
            name = str(t['type']).split('.')[-1]
            if name == 'LoadClipFromFiles' and t.get('with_label', True):
                name = 'LoadClipAnnotations'  # its label loader
            elif 'Annotation' not in name:
                continue
            loaders.append((key, name))
            assert name in CHECKED, f'{rel}: {key} loads labels with {name}'
            # the class range: from the argument, else from the data info
            assert t.get('num_classes') or video, \
                f'{rel}: {key}: {name} has no num_classes'
    for t in transforms(cfg.get('tta_pipeline')):
        if 'Annotation' in str(t['type']):
            assert t['type'] == 'LoadCheckedAnnotations' and \
                t.get('num_classes'), f'{rel}: tta_pipeline: {t}'
    assert loaders, f'{rel} loads no labels'


@pytest.mark.parametrize(
    'rel', [
        'configs/segformer/segformer_mit-b1_8xb2-160k_vspw-480x480.py',
        'configs/deeplabv3plus/deeplabv3plus_r50-d8_4xb4-80k_vspw-480x480.py'
    ])
def test_single_frame_vspw_config_refuses_labels_out_of_range(tmp_path, rel):
    root = tmp_path
    make_vspw_tree(str(root), videos=dict(val={'10_val_a': 2}))
    mask = root / 'data/10_val_a/mask/00000001.png'
    seg = cv2.imread(str(mask), cv2.IMREAD_UNCHANGED)
    seg[3, :4] = 200  # 199 after reduce_zero_label: not a VSPW class
    cv2.imwrite(str(mask), seg)
    init_default_scope('mmseg')
    cfg = Config.fromfile(osp.join(ROOT, rel)).val_dataloader.dataset
    cfg.data_root = str(root)
    dataset = DATASETS.build(cfg)
    assert len(dataset) == 2
    dataset[0]  # the untouched frame loads
    with pytest.raises(ValueError) as excinfo:
        dataset[1]
    msg = str(excinfo.value)
    assert str(mask) in msg and '[199]' in msg and '[0, 124)' in msg


def test_single_frame_cityscapes_config_refuses_labels_out_of_range(tmp_path):
    """A baseline on mmseg's CityscapesDataset (no class count in its data
    info): the loader's own num_classes."""
    root = tmp_path / 'cityscapes'
    stem = 'frankfurt_000000_000294'
    image = root / 'leftImg8bit/val/frankfurt' / f'{stem}_leftImg8bit.png'
    label = root / 'gtFine/val/frankfurt' / f'{stem}_gtFine_labelTrainIds.png'
    image.parent.mkdir(parents=True)
    label.parent.mkdir(parents=True)
    cv2.imwrite(str(image), np.zeros((16, 32, 3), np.uint8))
    seg = np.zeros((16, 32), np.uint8)
    seg[0] = 255
    seg[1] = 26  # a labelId, not a trainId
    cv2.imwrite(str(label), seg)
    init_default_scope('mmseg')
    cfg = Config.fromfile(
        osp.join(
            ROOT, 'configs/pspnet/'
            'pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py'))
    ds_cfg = cfg.val_dataloader.dataset
    ds_cfg.data_root = str(root)
    dataset = DATASETS.build(ds_cfg)
    with pytest.raises(ValueError) as excinfo:
        dataset[0]
    msg = str(excinfo.value)
    assert str(label) in msg and '[26]' in msg and '[0, 19)' in msg
