"""VSPWDataset on a tiny synthetic tree in the VSPW_480p layout."""
import os
import os.path as osp

import numpy as np
import pytest
from mmseg.registry import DATASETS

from helpers.vspw_tree import make_vspw_tree
from lma_mmseg.datasets import VSPW_CLASSES, VSPWDataset


@pytest.fixture(scope='module')
def vspw(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('vspw') / 'VSPW_480p')
    os.makedirs(root)
    masks = make_vspw_tree(root)
    return root, masks


def _build(root, **kwargs):
    cfg = dict(
        type='VSPWDataset',
        data_root=root,
        ann_file='val.txt',
        data_prefix=dict(img_path='data', seg_map_path='data'),
        frame_offsets=(-9, -6, -3),
        missing_frames='nearest',
        test_mode=True,
        pipeline=[dict(type='LoadClipFromFiles')])
    cfg.update(kwargs)
    return DATASETS.build(cfg)


def test_classes():
    assert len(VSPW_CLASSES) == 124 == len(set(VSPW_CLASSES))
    assert VSPWDataset.METAINFO['classes'][0] == 'wall'
    assert len(VSPWDataset.METAINFO['palette']) == 124


def test_every_labelled_frame_is_a_key_frame(vspw):
    root, masks = vspw
    ds = _build(root)
    assert len(ds) == 20 + 18
    info = ds.get_data_info(0)
    assert info['img_path'] == osp.join(root, 'data', '10_val_a', 'origin',
                                        '00000000.jpg')
    assert info['seg_map_path'] == osp.join(root, 'data', '10_val_a', 'mask',
                                            '00000000.png')
    # frame 0: every offset before the video's start -> the key frame
    assert info['clip_paths'] == [info['img_path']] * 4
    assert info['num_classes'] == 124 and info['reduce_zero_label']
    info = ds.get_data_info(12)
    folder = osp.join(root, 'data', '10_val_a', 'origin')
    assert info['clip_paths'] == [
        osp.join(folder, f'{i:08d}.jpg') for i in (3, 6, 9, 12)
    ]
    assert info['frame_offsets'] == (-9, -6, -3)
    # a frame of the second video
    assert ds.get_data_info(20)['img_path'].endswith(
        osp.join('11_val_b', 'origin', '00000000.jpg'))


def test_stride_and_other_offsets(vspw):
    root, _ = vspw
    ds = _build(root, key_frame_stride=3, frame_offsets=(-2, -1))
    # ceil(20 / 3) + ceil(18 / 3)
    assert len(ds) == 7 + 6
    stems = [osp.basename(ds.get_data_info(i)['img_path']) for i in range(7)]
    assert stems == [f'{i:08d}.jpg' for i in range(0, 20, 3)]
    info = ds.get_data_info(2)  # frame 6
    assert [osp.basename(p) for p in info['clip_paths']] == [
        '00000004.jpg', '00000005.jpg', '00000006.jpg'
    ]
    with pytest.raises(ValueError, match='key_frame_stride'):
        _build(root, key_frame_stride=0)


def test_labels_reduce_zero_label(vspw):
    root, masks = vspw
    ds = _build(root)
    sample = ds[5]
    gt = sample['gt_seg_map']
    raw = masks['val']['10_val_a'][5]
    expected = raw.astype(np.int32) - 1
    expected[(raw == 0) | (raw == 255)] = 255
    np.testing.assert_array_equal(gt, expected.astype(np.uint8))
    assert set(np.unique(gt)) - {255} <= set(range(124))
    assert (gt == 255).any() and (gt < 124).any()
    assert len(sample['imgs']) == 4


def test_unlabelled_test_split(vspw):
    root, _ = vspw
    ds = _build(root, ann_file='test.txt',
                data_prefix=dict(img_path='data', seg_map_path=''))
    assert len(ds) == 4
    assert ds.get_data_info(3)['seg_map_path'] is None


def test_bad_layouts_name_the_folders(vspw, tmp_path):
    root, _ = vspw
    with pytest.raises(FileNotFoundError, match='nope.txt'):
        _build(root, ann_file='nope.txt')
    (tmp_path / 'val.txt').write_text('ghost_video\n')
    with pytest.raises(FileNotFoundError, match='ghost_video'):
        _build(str(tmp_path))
    # a video folder without a single mask
    os.makedirs(tmp_path / 'data' / 'ghost_video' / 'mask')
    with pytest.raises(FileNotFoundError) as err:
        _build(str(tmp_path))
    msg = str(err.value)
    assert 'no annotated frame' in msg and '*.png' in msg
    assert osp.join('data', '{video}', 'mask') in msg
