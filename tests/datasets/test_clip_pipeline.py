"""Clip loading, clip-consistent augmentation and packing."""
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmcv.transforms import Compose
from mmengine.config import Config
from mmengine.runner import Runner

from lma_mmseg.datasets.transforms import (ClipTransformBroadcaster,
                                           LoadClipFromFiles,
                                           PackClipSegInputs)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
H, W, T = 40, 64, 4  # frame size, number of frames (3 memory + key)


def write_moving_clip(folder, label_fn=None, sizes=None):
    """Frames of a random world panning 1 px/frame to the left:
    frame_t[:, x] == frame_{t-1}[:, x + 1]. Returns the results dict of a
    data info."""
    rng = np.random.default_rng(0)
    world = rng.integers(0, 256, (H, W + T, 3), dtype=np.uint8)
    paths = []
    for t in range(T):
        frame = world[:, t:t + W]
        if sizes is not None:
            frame = cv2.resize(frame, sizes[t])
        path = osp.join(folder, f'clip_{t:06d}.png')
        cv2.imwrite(path, frame)
        paths.append(path)
    key = world[:, T - 1:T - 1 + W]
    label = label_fn(key) if label_fn else (key[..., 0] % 19)
    seg_path = osp.join(folder, 'clip_label.png')
    cv2.imwrite(seg_path, label.astype(np.uint8))
    return dict(
        img_path=paths[-1],
        seg_map_path=seg_path,
        clip_paths=paths,
        frame_offsets=tuple(range(-(T - 1), 0)),
        num_classes=19,
        reduce_zero_label=False,
        seg_fields=[])


def check_alignment(imgs, flipped):
    for t in range(1, len(imgs)):
        a, b = imgs[t].astype(int), imgs[t - 1].astype(int)
        if flipped:
            assert (a[:, 1:] == b[:, :-1]).all()
        else:
            assert (a[:, :-1] == b[:, 1:]).all()


def test_load_clip(tmp_path):
    info = write_moving_clip(str(tmp_path))
    results = LoadClipFromFiles()(dict(info))
    assert len(results['imgs']) == T
    assert results['img'] is results['imgs'][-1]
    assert results['img_shape'] == (H, W) == results['ori_shape']
    assert results['gt_seg_map'].shape == (H, W)
    assert results['seg_fields'] == ['gt_seg_map']
    assert (results['imgs'][0] == cv2.imread(info['clip_paths'][0])).all()
    check_alignment(results['imgs'], flipped=False)
    no_label = LoadClipFromFiles(with_label=False)(dict(info))
    assert 'gt_seg_map' not in no_label


def test_same_crop_flip_and_photometric_for_every_frame(tmp_path):
    """A moving pattern stays pixel-exactly aligned after a random crop
    (cat_max_ratio decided on the key label), flip and photometric
    distortion, flipped or not."""

    def band_label(key):
        label = np.zeros(key.shape[:2], np.uint8)
        label[:, W // 2:] = 1
        return label

    info = write_moving_clip(str(tmp_path), label_fn=band_label)
    pipeline = Compose(
        [
            LoadClipFromFiles(),
            ClipTransformBroadcaster(
                transforms=[
                    dict(
                        type='RandomCrop',
                        crop_size=(24, 32),
                        cat_max_ratio=0.75),
                    dict(type='RandomFlip', prob=0.5),
                    dict(type='PhotoMetricDistortion'),
                ]),
        ])
    flips = set()
    for seed in range(8):
        np.random.seed(seed)
        results = pipeline(dict(info))
        imgs = results['imgs']
        assert results['img'] is imgs[-1]
        assert all(img.shape == (24, 32, 3) for img in imgs)
        assert results['img_shape'] == (24, 32)
        check_alignment(imgs, flipped=results['flip'])
        flips.add(results['flip'])
        # cat_max_ratio=0.75 was decided on the key label: the crop holds
        # both classes (a miss after 10 tries has probability 0.3%).
        assert set(np.unique(results['gt_seg_map'])) == {0, 1}
    assert flips == {True, False}


@pytest.mark.parametrize('seed', range(4))
def test_label_follows_the_key_frame(tmp_path, seed):
    info = write_moving_clip(str(tmp_path))
    pipeline = Compose(
        [
            LoadClipFromFiles(),
            ClipTransformBroadcaster(
                transforms=[
                    dict(type='RandomCrop', crop_size=(24, 32)),
                    dict(type='RandomFlip', prob=0.5),
                ]),
        ])
    np.random.seed(seed)
    results = pipeline(dict(info))
    key = LoadClipFromFiles()(dict(info))['img']
    out_key, label = results['img'], results['gt_seg_map']
    if results['flip']:
        out_key, label = out_key[:, ::-1], label[:, ::-1]
    found = [
        (y, x) for y in range(H - 24 + 1) for x in range(W - 32 + 1)
        if (key[y:y + 24, x:x + 32] == out_key).all()
    ]
    assert len(found) == 1
    y, x = found[0]
    assert (label == key[y:y + 24, x:x + 32, 0] % 19).all()


def test_resize_and_photometric_identical_on_identical_frames(tmp_path):
    """With identical input frames every output frame is identical: one
    draw of every random parameter per clip."""
    img = np.random.default_rng(1).integers(0, 256, (H, W, 3), np.uint8)
    paths = []
    for t in range(T):
        paths.append(str(tmp_path / f'same_{t}.png'))
        cv2.imwrite(paths[-1], img)
    cv2.imwrite(str(tmp_path / 'same_label.png'), img[..., 0] % 19)
    info = dict(
        img_path=paths[-1],
        clip_paths=paths,
        seg_map_path=str(tmp_path / 'same_label.png'),
        seg_fields=[])
    pipeline = Compose(
        [
            LoadClipFromFiles(),
            ClipTransformBroadcaster(
                transforms=[
                    dict(
                        type='RandomResize',
                        scale=(W, H),
                        ratio_range=(0.5, 2.0),
                        keep_ratio=True),
                    dict(type='RandomCrop', crop_size=(32, 48)),
                    dict(type='RandomFlip', prob=0.5),
                    dict(type='PhotoMetricDistortion'),
                ]),
            PackClipSegInputs(),
        ])
    scales = set()
    for seed in range(5):
        np.random.seed(seed)
        packed = pipeline(dict(info))
        inputs = packed['inputs']
        assert inputs.dtype == torch.uint8 and inputs.shape[:2] == (T, 3)
        for t in range(T - 1):
            assert torch.equal(inputs[t], inputs[-1])
        assert packed['data_samples'].gt_sem_seg.shape == inputs.shape[-2:]
        scales.add(packed['data_samples'].scale_factor)
    assert len(scales) > 1  # the scale was drawn anew per clip


def test_global_random_stream_advances_once_per_clip(tmp_path):
    info = write_moving_clip(str(tmp_path))
    loaded = LoadClipFromFiles()(dict(info))
    broadcaster = ClipTransformBroadcaster(
        transforms=[dict(type='PhotoMetricDistortion')])
    np.random.seed(3)
    broadcaster(dict(loaded, imgs=loaded['imgs'][-1:]))
    single = np.random.rand()
    np.random.seed(3)
    broadcaster(dict(loaded))
    assert np.random.rand() == single


def test_content_dependent_transform_is_refused(tmp_path):

    class DrawsByBrightness:

        def __call__(self, results):
            np.random.rand(1 + int(results['img'].mean() > 127))
            return results

    info = write_moving_clip(str(tmp_path))
    loaded = LoadClipFromFiles()(dict(info))
    loaded['imgs'] = [np.zeros_like(loaded['img'])] * (T - 1) + \
        [np.full_like(loaded['img'], 255)]
    loaded['img'] = loaded['imgs'][-1]
    with pytest.raises(RuntimeError, match='drew different random numbers'):
        ClipTransformBroadcaster(transforms=[DrawsByBrightness()])(loaded)


def test_pack(tmp_path):
    info = write_moving_clip(str(tmp_path))
    results = LoadClipFromFiles()(dict(info))
    key = results['img'].copy()
    packed = PackClipSegInputs()(results)
    inputs = packed['inputs']
    assert inputs.shape == (T, 3, H, W) and inputs.dtype == torch.uint8
    assert torch.equal(inputs[-1], torch.from_numpy(key).permute(2, 0, 1))
    sample = packed['data_samples']
    assert sample.img_path == info['img_path']
    assert sample.clip_paths == info['clip_paths']
    assert sample.frame_offsets == info['frame_offsets']
    assert sample.ori_shape == (H, W) and sample.img_shape == (H, W)
    assert sample.gt_sem_seg.shape == (H, W)
    # A single-frame transform applied outside the broadcaster is caught.
    results = LoadClipFromFiles()(dict(info))
    results['img'] = results['img'][:, ::-1].copy()
    with pytest.raises(RuntimeError, match='ClipTransformBroadcaster'):
        PackClipSegInputs()(results)


def test_corrupt_frame_names_the_file(tmp_path):
    info = write_moving_clip(str(tmp_path))
    with open(info['clip_paths'][1], 'wb') as f:
        f.write(b'not a png at all')
    with pytest.raises(OSError, match=info['clip_paths'][1]):
        LoadClipFromFiles()(dict(info))
    # A truncated PNG.
    data = open(info['clip_paths'][2], 'rb').read()
    with open(info['clip_paths'][1], 'wb') as f:
        f.write(data[:len(data) // 3])
    with pytest.raises(OSError, match=info['clip_paths'][1]):
        LoadClipFromFiles()(dict(info))


def test_corrupt_label_names_the_file(tmp_path):
    info = write_moving_clip(str(tmp_path))
    with open(info['seg_map_path'], 'wb') as f:
        f.write(b'\x89PNG garbage')
    with pytest.raises(OSError, match=info['seg_map_path']):
        LoadClipFromFiles()(dict(info))


def test_label_values_outside_the_class_range(tmp_path):
    info = write_moving_clip(
        str(tmp_path),
        label_fn=lambda key: np.where(
            key[..., 0] > 250, 33, np.where(key[..., 1] > 250, 255, 1)))
    with pytest.raises(ValueError) as err:
        LoadClipFromFiles()(dict(info))
    assert info['seg_map_path'] in str(err.value)
    assert '[33]' in str(err.value)
    # 255 (ignore) alone is fine; so is an explicit larger class count.
    LoadClipFromFiles(num_classes=34)(dict(info))


def test_frames_of_different_sizes(tmp_path):
    sizes = [(W, H)] * (T - 1) + [(W + 8, H)]
    info = write_moving_clip(str(tmp_path), sizes=sizes)
    with pytest.raises(ValueError) as err:
        LoadClipFromFiles(with_label=False)(dict(info))
    msg = str(err.value)
    assert info['clip_paths'][0] in msg and info['clip_paths'][-1] in msg
    assert f'{W}x{H}' in msg and f'{W + 8}x{H}' in msg


def test_missing_clip_paths(tmp_path):
    with pytest.raises(KeyError, match='clip_paths'):
        LoadClipFromFiles()(dict(img_path='x.png'))


def test_dataloader_batches_clips(demo_root, demo_spec):
    """A real DataLoader from Runner.build_dataloader over the demo config,
    then the video data preprocessor: (B, T+1, 3, H, W)."""
    from mmseg.registry import MODELS
    cfg = Config.fromfile(
        osp.join(REPO, 'configs', '_base_', 'datasets', 'demo-seq.py'))
    loader_cfg = cfg.train_dataloader
    loader_cfg.dataset.data_root = demo_root
    loader_cfg.batch_size = 2
    loader_cfg.num_workers = 1
    loader_cfg.persistent_workers = False
    loader_cfg.sampler = dict(type='DefaultSampler', shuffle=True)
    loader = Runner.build_dataloader(loader_cfg, seed=0)
    preprocessor = MODELS.build(
        dict(
            type='VideoSegDataPreProcessor',
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True,
            size=cfg.crop_size))
    seen = 0
    for batch in loader:
        assert batch['inputs'][0].shape == (4, 3, *cfg.crop_size)
        out = preprocessor(batch, training=True)
        assert out['inputs'].shape == (2, 4, 3, *cfg.crop_size)
        assert out['inputs'].dtype == torch.float32
        for sample in out['data_samples']:
            assert sample.gt_sem_seg.shape == cfg.crop_size
            assert len(sample.clip_paths) == 4
        seen += out['inputs'].shape[0]
    assert seen == demo_spec['num_train']
