"""Checkpoints written by mmengine's Runner load under torch >= 2.6.

torch loads with ``weights_only=True``; :mod:`lma_mmseg.compat` allow-lists
exactly the globals mmengine's checkpoints carry, so loading and resuming work
while any other pickled object is still refused.
"""
import pickle

import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.runner import Runner, load_checkpoint
from mmengine.structures import PixelData
from mmseg.registry import DATASETS
from mmseg.structures import SegDataSample

import lma_mmseg  # noqa: F401  (applies the allow-list)

NUM_CLASSES = 3


class UnrelatedObject:
    """A class no checkpoint loader should ever instantiate."""

    def __init__(self, payload):
        self.payload = payload


@DATASETS.register_module(force=True)
class CompatTinySegDataset(torch.utils.data.Dataset):
    """A few random 32x32 images with random labels, in mmseg's format."""

    metainfo = dict(classes=('a', 'b', 'c'), palette=[[0, 0, 0]] * 3)

    def __init__(self, num=8):
        gen = torch.Generator().manual_seed(0)
        self.items = []
        for _ in range(num):
            img = torch.randint(0, 256, (3, 32, 32), generator=gen)
            label = torch.randint(0, NUM_CLASSES, (1, 32, 32), generator=gen)
            sample = SegDataSample(
                metainfo=dict(img_shape=(32, 32), ori_shape=(32, 32)))
            sample.gt_sem_seg = PixelData(data=label)
            self.items.append(
                dict(inputs=img.to(torch.uint8), data_samples=sample))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        return self.items[idx]


def tiny_model_cfg():
    return dict(
        type='EncoderDecoder',
        data_preprocessor=dict(
            type='SegDataPreProcessor',
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True,
            size=(32, 32)),
        backbone=dict(
            type='ERFNet',
            enc_downsample_channels=(8, 16, 32),
            enc_stage_non_bottlenecks=(1, 1),
            enc_non_bottleneck_dilations=(2, ),
            enc_non_bottleneck_channels=(16, 32),
            dec_upsample_channels=(16, 8),
            dec_stages_non_bottleneck=(1, 1),
            dec_non_bottleneck_channels=(16, 8)),
        decode_head=dict(
            type='FCNHead',
            in_channels=8,
            channels=8,
            num_convs=1,
            concat_input=False,
            num_classes=NUM_CLASSES,
            loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))


def build_runner(work_dir, max_iters, resume=False):
    cfg = ConfigDict(
        model=tiny_model_cfg(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=dict(type='CompatTinySegDataset'),
            sampler=dict(type='InfiniteSampler', shuffle=True),
            collate_fn=dict(type='pseudo_collate'),
            batch_size=2,
            num_workers=0),
        optim_wrapper=dict(
            type='OptimWrapper',
            optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        param_scheduler=[
            dict(
                type='PolyLR',
                eta_min=1e-4,
                power=0.9,
                begin=0,
                end=8,
                by_epoch=False)
        ],
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=max_iters),
        default_hooks=dict(
            checkpoint=dict(
                type='CheckpointHook', interval=2, by_epoch=False),
            logger=dict(type='LoggerHook', interval=1)),
        default_scope='mmseg',
        randomness=dict(seed=0),
        resume=resume,
        experiment_name=f'compat_{max_iters}_{int(resume)}')
    return Runner.from_cfg(cfg)


def test_runner_resume_continues_from_saved_iteration(tmp_path):
    runner = build_runner(tmp_path, max_iters=2)
    runner.train()
    ckpt = tmp_path / 'iter_2.pth'
    assert ckpt.is_file()
    lr_after_two = runner.optim_wrapper.get_lr()['lr'][0]

    # The checkpoint holds what torch's default loader used to refuse.
    raw = torch.load(ckpt, map_location='cpu')  # weights_only=True default
    buffers = raw['message_hub']['log_scalars']
    assert type(buffers['train/loss']).__name__ == 'HistoryBuffer'

    resumed = build_runner(tmp_path, max_iters=4, resume=True)
    resumed.train()
    # resume picked up iteration 2 and the LR schedule state, then ran on
    assert resumed.iter == 4
    assert (tmp_path / 'iter_4.pth').is_file()
    hub = resumed.message_hub
    losses = hub.get_scalar('train/loss').data[0]
    assert len(losses) == 4  # 2 restored from the checkpoint + 2 new
    state = torch.load(tmp_path / 'iter_4.pth', map_location='cpu')
    assert state['meta']['iter'] == 4
    assert state['param_schedulers'][0]['_global_step'] == 4
    assert resumed.optim_wrapper.get_lr()['lr'][0] < lr_after_two

    # load_checkpoint into a fresh model works the same way
    model = resumed.model
    load_checkpoint(model, str(ckpt), map_location='cpu')


def test_weights_only_is_not_disabled():
    import os
    assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' not in os.environ
    assert 'TORCH_FORCE_WEIGHTS_ONLY_LOAD' not in os.environ or \
        os.environ['TORCH_FORCE_WEIGHTS_ONLY_LOAD'] != '0'


def test_checkpoint_with_unrelated_object_is_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save(
        dict(state_dict=dict(w=torch.zeros(2)), meta=UnrelatedObject(1)),
        path)
    with pytest.raises(pickle.UnpicklingError, match='UnrelatedObject'):
        torch.load(path, map_location='cpu')
    with pytest.raises(pickle.UnpicklingError, match='UnrelatedObject'):
        load_checkpoint(torch.nn.Linear(2, 2), str(path), map_location='cpu')


def test_getattr_is_only_allowed_on_history_buffer(tmp_path):
    """``getattr`` is allow-listed for HistoryBuffer's methods alone."""
    from collections import OrderedDict

    class Sneaky:

        def __reduce__(self):
            # OrderedDict itself is allowed; getattr on it must not be
            return getattr, (OrderedDict, 'fromkeys')

    path = tmp_path / 'getattr.pth'
    torch.save(dict(meta=Sneaky()), path)
    with pytest.raises(pickle.UnpicklingError, match='refused getattr'):
        torch.load(path, map_location='cpu')
