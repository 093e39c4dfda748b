"""tools/infer_video.py: streaming overlays, MP4, timings and bad input."""
import json
import os.path as osp

import cv2
import numpy as np
import pytest
import torch

import lma_mmseg  # noqa: F401
from helpers import ROOT
from helpers.tools import run_tool_in_process
from lma_mmseg.apis import StreamingSegmenter, init_model
from lma_mmseg.apis.video_io import colourise
from lma_mmseg.fileio import stale_temp_files

NUM_CLASSES = 4
# distinct colours that no blend of a random frame is likely to hit
PALETTE = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]]
CONFIG = f"""
_base_ = [
    {osp.join(ROOT, 'configs/_base_/models/lma-erfnet.py')!r},
    {osp.join(ROOT, 'configs/_base_/default_runtime.py')!r},
]
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    backbone=dict(
        enc_downsample_channels=(8, 16, 128),
        enc_stage_non_bottlenecks=(1, 1),
        enc_non_bottleneck_dilations=(2, ),
        enc_non_bottleneck_channels=(16, 128)),
    neck=dict(window=5),
    decode_head=dict(
        dec_upsample_channels=(16, 8),
        dec_stages_non_bottleneck=(1, 1),
        dec_non_bottleneck_channels=(16, 8),
        num_classes={NUM_CLASSES},
        norm_cfg=norm_cfg))
"""


@pytest.fixture(scope='module')
def model_files(tmp_path_factory):
    """A small LMA-ERFNet config and a checkpoint with its palette."""
    root = tmp_path_factory.mktemp('infer_model')
    config = root / 'lma_small.py'
    config.write_text(CONFIG)
    torch.manual_seed(0)
    model = init_model(str(config))
    with torch.no_grad():  # several classes predicted
        model.decode_head.conv_seg.weight.normal_(0, 5)
    ckpt = root / 'model.pth'
    torch.save(
        dict(
            state_dict=model.state_dict(),
            meta=dict(
                dataset_meta=dict(classes=tuple('abcd'), palette=PALETTE))),
        ckpt)
    return str(config), str(ckpt)


def infer_video_in_process(*args):
    """The tool in this process (its process boundary is not what these
    tests check)."""
    return run_tool_in_process('infer_video.py', *args)


def _frames(folder, num=4, size=(48, 64), seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(num):
        img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f'f_{i:03d}.png'), img)
    return folder


def test_folder_of_frames(tmp_path, model_files):
    config, ckpt = model_files
    frames = _frames(tmp_path / 'clip')
    out = tmp_path / 'out'
    proc = infer_video_in_process(config, ckpt, frames, '--out', out,
                                  '--opacity', '1.0')
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = proc.stdout
    assert 'ms/frame' in printed
    palette_bgr = {tuple(c[::-1]) for c in PALETTE}
    names = sorted(p.name for p in (out / 'overlays').iterdir())
    assert names == [f'f_{i:03d}.png' for i in range(4)]
    # the segmenter streamed over the same frames, in this process
    segmenter = StreamingSegmenter(init_model(config, ckpt))
    classes = set()
    for name in names:
        overlay = cv2.imread(str(out / 'overlays' / name))
        assert overlay.shape == (48, 64, 3)
        colours = {tuple(c) for c in overlay.reshape(-1, 3).tolist()}
        assert colours <= palette_bgr, colours - palette_bgr
        pred = segmenter(cv2.imread(str(frames / name)))
        labels = pred.pred_sem_seg.data[0].numpy()
        expected = np.array(PALETTE, np.uint8)[labels][..., ::-1]
        assert np.array_equal(overlay, expected), name
        classes |= set(np.unique(labels).tolist())
    assert len(classes) >= 2  # not one flat colour
    cap = cv2.VideoCapture(str(out / 'clip.mp4'))
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    assert count == 4
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['num_frames'] == 4
    assert summary['ms_per_frame']['mean'] > 0
    assert not stale_temp_files(out)  # no temporary file left


def test_overlay_blends_with_opacity():
    img = np.full((2, 2, 3), 100, np.uint8)
    labels = np.array([[0, 1], [2, 3]])
    palette = np.array(PALETTE, np.uint8)
    out = colourise(img, labels, palette, 0.5)
    # class 0 is RGB (255, 0, 0), BGR (0, 0, 255)
    assert out[0, 0].tolist() == [50, 50, 178]
    assert colourise(img, labels, palette, 0.0).tolist() == img.tolist()
    with pytest.raises(ValueError, match='no palette colour'):
        colourise(img, labels + 1, palette, 0.5)


def test_video_file_input(tmp_path, model_files):
    config, ckpt = model_files
    video = tmp_path / 'drive.avi'
    writer = cv2.VideoWriter(
        str(video), cv2.VideoWriter_fourcc(*'MJPG'), 5, (64, 48))
    assert writer.isOpened()
    rng = np.random.default_rng(1)
    for _ in range(3):
        writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.release()
    out = tmp_path / 'out'
    proc = infer_video_in_process(config, ckpt, video, '--out', out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (out / 'overlays').iterdir()) == [
        f'frame_{i:06d}.png' for i in range(3)
    ]
    assert (out / 'drive.mp4').is_file()
    assert json.loads((out / 'summary.json').read_text())['fps'] == 5


@pytest.mark.parametrize('case', ['missing', 'empty', 'extension', 'image'])
def test_bad_input_paths(tmp_path, model_files, case):
    config, ckpt = model_files
    if case == 'missing':
        path, expected = tmp_path / 'nope', 'does not exist'
    elif case == 'empty':
        path, expected = tmp_path / 'empty', 'holds no frames'
        path.mkdir()
        (path / 'notes.txt').write_text('not a frame')
    elif case == 'extension':
        path, expected = tmp_path / 'clip.xyz', "unknown extension '.xyz'"
        path.write_bytes(b'data')
    else:
        path, expected = tmp_path / 'one.png', 'is a single image'
        cv2.imwrite(str(path), np.zeros((4, 4, 3), np.uint8))
    out = tmp_path / 'out'
    proc = infer_video_in_process(config, ckpt, path, '--out', out)
    assert proc.returncode == 2
    err = proc.stderr
    assert expected in err and str(path) in err
    assert 'Traceback' not in err
    assert not out.exists()  # nothing was started


def test_bad_options(tmp_path, model_files):
    config, ckpt = model_files
    frames = _frames(tmp_path / 'clip', num=1)
    proc = infer_video_in_process(config, ckpt, frames, '--out',
                                  tmp_path / 'o', '--opacity', '1.5')
    assert proc.returncode == 2
    assert '--opacity must be in [0, 1]' in proc.stderr
    proc = infer_video_in_process(config, tmp_path / 'no.pth', frames,
                                  '--out', tmp_path / 'o')
    assert proc.returncode == 2
    assert 'checkpoint file' in proc.stderr


def test_unreadable_frame_keeps_earlier_results(tmp_path, model_files):
    config, ckpt = model_files
    frames = _frames(tmp_path / 'clip', num=3)
    bad = frames / 'f_001.png'
    bad.write_bytes(bad.read_bytes()[:40])  # truncated PNG
    out = tmp_path / 'out'
    proc = infer_video_in_process(config, ckpt, frames, '--out', out)
    assert proc.returncode == 2
    err = proc.stderr
    assert f'cannot read frame {str(bad)!r}' in err
    # the frame before it is kept, as is the video of that frame
    assert [p.name for p in (out / 'overlays').iterdir()] == ['f_000.png']
    assert (out / 'clip.mp4').is_file()
    assert not stale_temp_files(out)
