"""VideoSegDataPreProcessor: per-frame normalisation, identical padding of a
clip's frames and label, single-frame behaviour equal to mmseg's."""
import pytest
import torch
from mmengine.structures import PixelData
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

ARGS = dict(
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)


def make_batch(shapes, frames=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for h, w in shapes:
        size = (frames, 3, h, w) if frames else (3, h, w)
        inputs.append(
            torch.randint(0, 256, size, generator=g, dtype=torch.uint8))
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, 19, (1, h, w), generator=g))
        sample.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w)))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def reference(frame, mean, std):
    """mmseg's per-image conversion of one (3, H, W) frame."""
    return (frame[[2, 1, 0]].float() - torch.tensor(mean).view(3, 1, 1)) / \
        torch.tensor(std).view(3, 1, 1)


def test_training_pads_frames_and_label_identically():
    pre = MODELS.build(
        dict(type='VideoSegDataPreProcessor', size_divisor=16, **ARGS))
    batch = make_batch([(30, 40), (20, 50)])
    raw = [x.clone() for x in batch['inputs']]
    labels = [s.gt_sem_seg.data.clone() for s in batch['data_samples']]
    out = pre(batch, training=True)
    inputs = out['inputs']
    assert inputs.shape == (2, 4, 3, 32, 64) and inputs.dtype == torch.float32
    for b, (h, w) in enumerate([(30, 40), (20, 50)]):
        for t in range(4):
            expected = reference(raw[b][t], ARGS['mean'], ARGS['std'])
            torch.testing.assert_close(inputs[b, t, :, :h, :w], expected)
            assert (inputs[b, t, :, h:, :] == 0).all()
            assert (inputs[b, t, :, :, w:] == 0).all()
        sample = out['data_samples'][b]
        seg = sample.gt_sem_seg.data
        assert seg.shape == (1, 32, 64)
        assert torch.equal(seg[:, :h, :w], labels[b])
        assert (seg[:, h:] == 255).all() and (seg[:, :, w:] == 255).all()
        assert sample.padding_size == (0, 64 - w, 0, 32 - h)


def test_fixed_size_and_test_cfg():
    pre = MODELS.build(
        dict(
            type='VideoSegDataPreProcessor',
            size=(32, 64),
            test_cfg=dict(size_divisor=8),
            **ARGS))
    out = pre(make_batch([(30, 60), (30, 60)]), training=True)
    assert out['inputs'].shape == (2, 4, 3, 32, 64)
    out = pre(make_batch([(30, 60)]), training=False)
    assert out['inputs'].shape == (1, 4, 3, 32, 64)
    assert out['data_samples'][0].img_padding_size == (0, 4, 0, 2)
    # Without test_cfg, test batches are stacked unpadded.
    pre = MODELS.build(dict(type='VideoSegDataPreProcessor', **ARGS))
    out = pre(make_batch([(30, 60)] * 2), training=False)
    assert out['inputs'].shape == (2, 4, 3, 30, 60)
    # Without size or size_divisor, training pads to the largest clip.
    out = pre(make_batch([(30, 60), (20, 64)]), training=True)
    assert out['inputs'].shape == (2, 4, 3, 30, 64)
    seg = out['data_samples'][1].gt_sem_seg.data
    assert seg.shape == (1, 30, 64) and (seg[:, 20:] == 255).all()
    pre = MODELS.build(
        dict(
            type='VideoSegDataPreProcessor',
            size=(32, 64),
            size_divisor=8,
            **ARGS))
    with pytest.raises(ValueError, match='not both'):
        pre(make_batch([(30, 60)]), training=True)


def test_single_frames_match_mmseg():
    ours = MODELS.build(
        dict(type='VideoSegDataPreProcessor', size_divisor=16, **ARGS))
    theirs = SegDataPreProcessor(size_divisor=16, **ARGS)
    a = ours(make_batch([(30, 40), (20, 50)], frames=0), training=True)
    b = theirs(make_batch([(30, 40), (20, 50)], frames=0), training=True)
    assert a['inputs'].shape == (2, 3, 32, 64)
    assert torch.equal(a['inputs'], b['inputs'])
    for sa, sb in zip(a['data_samples'], b['data_samples']):
        assert torch.equal(sa.gt_sem_seg.data, sb.gt_sem_seg.data)


def test_clip_of_one_frame_and_no_normalisation():
    pre = MODELS.build(dict(type='VideoSegDataPreProcessor', size=(8, 8)))
    batch = make_batch([(8, 8)], frames=1)
    raw = batch['inputs'][0].clone()
    out = pre(batch, training=True)
    assert out['inputs'].shape == (1, 1, 3, 8, 8)
    assert torch.equal(out['inputs'][0], raw.float())


def test_bad_batches():
    pre = MODELS.build(
        dict(type='VideoSegDataPreProcessor', size_divisor=8, **ARGS))
    batch = make_batch([(16, 16), (16, 16)])
    batch['inputs'][1] = batch['inputs'][1][:3]
    with pytest.raises(ValueError, match='same number of frames'):
        pre(batch, training=True)
    batch = make_batch([(16, 16), (16, 16)])
    batch['inputs'][1] = batch['inputs'][1][0]
    with pytest.raises(ValueError, match='all be clips'):
        pre(batch, training=True)
    with pytest.raises(ValueError, match='same size'):
        pre(make_batch([(16, 16), (16, 24)]), training=False)
    with pytest.raises(ValueError, match='data_samples'):
        pre(dict(inputs=make_batch([(16, 16)])['inputs']), training=True)
