"""CityscapesVideoDataset / VideoSegDataset on a generated tree."""
import logging
import os
import os.path as osp

import numpy as np
import pytest
from mmengine.logging import MMLogger
from mmseg.datasets import CityscapesDataset
from mmseg.registry import DATASETS


def build(root, split='train', **kwargs):
    prefix = dict(
        img_path=f'leftImg8bit_sequence/{split}',
        seg_map_path='' if split == 'test' else f'gtFine/{split}')
    prefix.update(kwargs.pop('data_prefix', {}))
    return DATASETS.build(
        dict(
            type='CityscapesVideoDataset',
            data_root=root,
            data_prefix=prefix,
            **kwargs))


def frame_path(root, split, city, seq, frame):
    return osp.join(
        root, 'leftImg8bit_sequence', split, city,
        f'{city}_{seq:06d}_{frame:06d}_leftImg8bit.png')


class LogCollector(logging.Handler):

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def warnings_log():
    logger = MMLogger.get_current_instance()
    handler = LogCollector()
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def test_samples_and_metainfo(demo_root, demo_spec):
    ds = build(demo_root)
    assert len(ds) == demo_spec['num_train']
    assert ds.metainfo['classes'] == CityscapesDataset.METAINFO['classes']
    assert ds.metainfo['palette'] == CityscapesDataset.METAINFO['palette']
    assert not ds.reduce_zero_label
    assert len(build(demo_root, 'val')) == demo_spec['num_val']


def test_clip_paths_for_offsets(demo_root):
    for offsets in ((-3, -2, -1), (-9, -6, -3)):
        ds = build(demo_root, frame_offsets=offsets)
        info = next(
            ds.get_data_info(i) for i in range(len(ds))
            if 'aachen_000001_000019' in ds.get_data_info(i)['img_path'])
        key = frame_path(demo_root, 'train', 'aachen', 1, 19)
        assert info['img_path'] == key
        assert info['seg_map_path'] == osp.join(
            demo_root, 'gtFine', 'train', 'aachen',
            'aachen_000001_000019_gtFine_labelTrainIds.png')
        assert info['clip_paths'] == [
            frame_path(demo_root, 'train', 'aachen', 1, 19 + o)
            for o in offsets
        ] + [key]
        assert info['frame_offsets'] == offsets
        assert info['num_classes'] == 19


def test_single_frame_clips(demo_root):
    ds = build(demo_root, frame_offsets=())
    info = ds.get_data_info(0)
    assert info['clip_paths'] == [info['img_path']]


def test_missing_frame_error_names_path_key_and_offset(demo_copy):
    missing = frame_path(demo_copy, 'train', 'bochum', 1, 17)
    os.remove(missing)
    with pytest.raises(FileNotFoundError) as err:
        build(demo_copy, missing_frames='error')
    msg = str(err.value)
    assert missing in msg
    assert frame_path(demo_copy, 'train', 'bochum', 1, 19) in msg
    assert 'offset -2' in msg


def test_missing_frame_nearest(demo_copy, warnings_log):
    os.remove(frame_path(demo_copy, 'train', 'bochum', 1, 17))
    os.remove(frame_path(demo_copy, 'train', 'bremen', 1, 16))
    ds = build(demo_copy, missing_frames='nearest')
    assert len(ds) == 6  # nothing dropped
    by_key = {
        osp.basename(ds.get_data_info(i)['img_path'])[:13]: ds.get_data_info(
            i)
        for i in range(len(ds))
    }
    info = by_key['bochum_000001']
    # 17 is missing: 16 and 18 are both 1 away, 18 is closer to the key.
    assert info['clip_paths'][:3] == [
        frame_path(demo_copy, 'train', 'bochum', 1, t) for t in (16, 18, 18)
    ]
    assert info['frame_offsets'] == (-3, -1, -1)
    info = by_key['bremen_000001']
    assert info['clip_paths'][0] == frame_path(
        demo_copy, 'train', 'bremen', 1, 17)
    assert info['frame_offsets'] == (-2, -2, -1)
    replaced = [m for m in warnings_log if 'replaced by the nearest' in m]
    assert len(replaced) == 1 and replaced[0].startswith(
        'CityscapesVideoDataset: 2 memory frame(s)')


def test_nearest_beyond_the_written_frames(demo_root, warnings_log):
    """Snippet 1 only has frames 10..19: offset -12 falls back to frame 10."""
    ds = build(demo_root, frame_offsets=(-12, -1), missing_frames='nearest')
    info = next(
        ds.get_data_info(i) for i in range(len(ds))
        if 'aachen_000001' in ds.get_data_info(i)['img_path'])
    assert info['clip_paths'][0] == frame_path(
        demo_root, 'train', 'aachen', 1, 10)
    assert info['frame_offsets'] == (-9, -1)
    assert any('3 memory frame(s)' in m for m in warnings_log)
    with pytest.raises(FileNotFoundError, match='offset -12'):
        build(demo_root, frame_offsets=(-12, -1))


def test_key_frame_falls_back_to_leftImg8bit(demo_copy):
    key = frame_path(demo_copy, 'val', 'lindau', 0, 19)
    os.remove(key)
    ds = build(demo_copy, 'val')
    paths = [ds.get_data_info(i)['img_path'] for i in range(len(ds))]
    fallback = osp.join(
        demo_copy, 'leftImg8bit', 'val', 'lindau',
        'lindau_000000_000019_leftImg8bit.png')
    assert fallback in paths
    info = ds.get_data_info(paths.index(fallback))
    assert info['clip_paths'][-1] == fallback
    assert info['clip_paths'][0] == frame_path(
        demo_copy, 'val', 'lindau', 0, 16)
    os.remove(fallback)
    with pytest.raises(FileNotFoundError, match='lindau_000000_000019'):
        build(demo_copy, 'val')


def test_unlabelled_test_split(demo_root, demo_spec):
    ds = build(
        demo_root,
        'test',
        test_mode=True,
        pipeline=[
            dict(type='LoadClipFromFiles'),
            dict(type='PackClipSegInputs')
        ])
    assert len(ds) == demo_spec['num_test']
    sample = ds[0]
    assert sample['inputs'].shape == (4, 3, *demo_spec['size'])
    assert 'gt_sem_seg' not in sample['data_samples']
    assert sample['data_samples'].seg_map_path is None
    assert sample['data_samples'].img_path.endswith('_000019_leftImg8bit.png')


def test_format_only_on_the_test_split(demo_root, tmp_path):
    """mmseg's CityscapesMetric writes result files from the key frames'
    img_path, unchanged."""
    import torch
    from mmengine.structures import PixelData
    from mmseg.evaluation import CityscapesMetric
    ds = build(
        demo_root,
        'test',
        test_mode=True,
        pipeline=[
            dict(type='LoadClipFromFiles'),
            dict(type='PackClipSegInputs')
        ])
    metric = CityscapesMetric(
        format_only=True, keep_results=True, output_dir=str(tmp_path))
    metric.dataset_meta = ds.metainfo
    samples = []
    for i in range(len(ds)):
        sample = ds[i]['data_samples']
        sample.pred_sem_seg = PixelData(
            data=torch.zeros((1, *sample.ori_shape), dtype=torch.long))
        samples.append(sample.to_dict())
    metric.process({}, samples)
    assert metric.compute_metrics(metric.results) == {}
    written = sorted(os.listdir(tmp_path))
    assert written == sorted(osp.basename(s['img_path']) for s in samples)
    import cv2
    result = cv2.imread(str(tmp_path / written[0]), cv2.IMREAD_UNCHANGED)
    assert (result == 7).all()  # trainId 0 (road) written as labelId 7


def test_ann_file(demo_root, tmp_path):
    ann = tmp_path / 'val.txt'
    ann.write_text('lindau/lindau_000000_000019\n')
    ds = build(demo_root, 'val', ann_file=str(ann))
    assert len(ds) == 1
    assert ds.get_data_info(0)['clip_paths'][0] == frame_path(
        demo_root, 'val', 'lindau', 0, 16)


def test_train_offsets_sampler(demo_root):
    ds = build(
        demo_root,
        frame_offsets=(-3, -2, -1),
        train_offsets_sampler=dict(strides=(1, 3)))
    np.random.seed(0)
    seen = set()
    for _ in range(20):
        info = ds.get_data_info(1)
        seen.add(info['frame_offsets'])
        key = int(info['img_path'][-22:-16])
        assert [int(p[-22:-16]) for p in info['clip_paths']] == \
            [key + o for o in info['frame_offsets']] + [key]
    assert seen == {(-3, -2, -1), (-9, -6, -3)}
    # Fixed offsets in test mode.
    ds = build(
        demo_root,
        'val',
        test_mode=True,
        train_offsets_sampler=dict(strides=(3, )))
    assert ds.get_data_info(0)['frame_offsets'] == (-3, -2, -1)
    ds = build(
        demo_root,
        train_offsets_sampler=dict(strides=(1, 2), probs=(0.0, 1.0)))
    assert ds.get_data_info(0)['frame_offsets'] == (-6, -4, -2)


@pytest.mark.parametrize(
    'kwargs, match', [
        (dict(frame_offsets=(-1, -2)), 'frame_offsets'),
        (dict(frame_offsets=(-1, 1)), 'frame_offsets'),
        (dict(missing_frames='skip'), 'missing_frames'),
        (dict(train_offsets_sampler=dict(stride=2)), 'train_offsets_sampler'),
        (dict(train_offsets_sampler=dict(strides=(0, ))), 'strides'),
        (
            dict(train_offsets_sampler=dict(strides=(1, 2), probs=(1.0, ))),
            'probs'),
    ])
def test_bad_arguments(demo_root, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build(demo_root, **kwargs)


def test_missing_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match='gtFine'):
        build(str(tmp_path))


def test_generic_video_dataset(tmp_path):
    """Any folder of frame sequences with a frame-number pattern."""
    import cv2
    root = tmp_path / 'videos'
    (root / 'frames' / 'clipA').mkdir(parents=True)
    (root / 'labels' / 'clipA').mkdir(parents=True)
    img = np.zeros((8, 8, 3), np.uint8)
    for t in range(1, 6):
        cv2.imwrite(str(root / 'frames' / 'clipA' / f'clipA-{t:04d}.jpg'), img)
    cv2.imwrite(str(root / 'labels' / 'clipA' / 'clipA-0005.png'), img[..., 0])
    ds = DATASETS.build(
        dict(
            type='VideoSegDataset',
            data_root=str(root),
            data_prefix=dict(img_path='frames', seg_map_path='labels'),
            img_suffix='.jpg',
            seg_map_suffix='.png',
            frame_pattern=r'^clip\w-(?P<frame>\d+)$',
            frame_offsets=(-4, -2),
            metainfo=dict(classes=('a', 'b'))))
    info = ds.get_data_info(0)
    assert [osp.basename(p) for p in info['clip_paths']] == \
        ['clipA-0001.jpg', 'clipA-0003.jpg', 'clipA-0005.jpg']


def test_nearest_never_uses_a_later_frame(demo_copy):
    """Snippet 0 has frames 0..29: with 16, 17 and 18 gone the clip is
    15, 19, 19 (the key frame), never 20 or later."""
    for t in (16, 17, 18):
        os.remove(frame_path(demo_copy, 'train', 'aachen', 0, t))
    ds = build(demo_copy, missing_frames='nearest')
    info = next(
        ds.get_data_info(i) for i in range(len(ds))
        if 'aachen_000000' in ds.get_data_info(i)['img_path'])
    assert info['clip_paths'] == [
        frame_path(demo_copy, 'train', 'aachen', 0, t)
        for t in (15, 19, 19, 19)
    ]
    assert info['frame_offsets'] == (-4, 0, 0)
