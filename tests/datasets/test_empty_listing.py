"""A video dataset without any annotated frame says where it looked."""
import os

import pytest
from mmseg.registry import DATASETS


def test_empty_gtfine_names_folders_and_suffix(tmp_path):
    root = tmp_path / 'cityscapes'
    os.makedirs(root / 'gtFine' / 'train' / 'aachen')
    os.makedirs(root / 'leftImg8bit_sequence' / 'train' / 'aachen')
    with pytest.raises(FileNotFoundError) as err:
        DATASETS.build(
            dict(
                type='CityscapesVideoDataset',
                data_root=str(root),
                data_prefix=dict(
                    img_path='leftImg8bit_sequence/train',
                    seg_map_path='gtFine/train'),
                pipeline=[]))
    msg = str(err.value)
    assert 'found no annotated frame' in msg
    assert str(root / 'gtFine' / 'train') in msg
    assert '*_gtFine_labelTrainIds.png' in msg
    assert str(root / 'leftImg8bit_sequence' / 'train') in msg
    assert 'need at least one array' not in msg
    # labelIds only (labelTrainIds not created yet): the files are shown
    label_ids = root / 'gtFine' / 'train' / 'aachen' / (
        'aachen_000000_000019_gtFine_labelIds.png')
    label_ids.write_bytes(b'')
    with pytest.raises(FileNotFoundError) as err:
        DATASETS.build(
            dict(
                type='CityscapesVideoDataset',
                data_root=str(root),
                data_prefix=dict(
                    img_path='leftImg8bit_sequence/train',
                    seg_map_path='gtFine/train'),
                pipeline=[]))
    assert f'it holds other files, e.g. {label_ids}' in str(err.value)


def test_empty_ann_file(tmp_path):
    (tmp_path / 'seq').mkdir()
    (tmp_path / 'list.txt').write_text('\n')
    with pytest.raises(FileNotFoundError, match='list.txt lists no key'):
        DATASETS.build(
            dict(
                type='VideoSegDataset',
                data_root=str(tmp_path),
                ann_file='list.txt',
                data_prefix=dict(img_path='seq'),
                pipeline=[]))
