"""A tiny mmseg training set-up for the engine tests, usable as a script.

``python tiny_runner.py WORK_DIR --max-iters N [--resume] [--sleep S]
[--die-at-fsync NAME [--die-at-count K]]`` trains mmseg's EncoderDecoder
(a small ERFNet) on a few random images with mmengine's Runner and the
AtomicCheckpointHook.
``--die-at-fsync NAME`` makes the process SIGKILL itself the K-th time a
file whose name starts with ``NAME`` is fsync-ed, i.e. in the middle of an
atomic write of that file, after its bytes are on disk and before the
rename.
"""
import argparse
import os
import signal
import sys
import time

import torch
from mmengine.config import ConfigDict
from mmengine.hooks import Hook
from mmengine.runner import Runner
from mmengine.structures import PixelData
from mmseg.registry import DATASETS, HOOKS
from mmseg.structures import SegDataSample

import lma_mmseg  # noqa: F401

NUM_CLASSES = 3
CKPT_INTERVAL = 3
SCHEDULE_END = 40  # iterations of the LR schedule, whatever max_iters is


@DATASETS.register_module(force=True)
class EngineTinySegDataset(torch.utils.data.Dataset):
    """Sixteen random 32x32 images with random labels, in mmseg's format."""

    metainfo = dict(classes=('a', 'b', 'c'), palette=[[0, 0, 0]] * 3)

    def __init__(self, num=16):
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


@HOOKS.register_module(force=True)
class EngineSlowIterHook(Hook):
    """Sleeps after every training iteration (gives a killer time)."""

    def __init__(self, seconds=0.0):
        self.seconds = seconds

    def after_train_iter(
            self, runner, batch_idx, data_batch=None, outputs=None):
        time.sleep(self.seconds)


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


def tiny_cfg(
        work_dir,
        max_iters,
        resume=False,
        seed=0,
        sleep=0.0,
        max_keep_ckpts=-1,
        checkpoint_type='AtomicCheckpointHook'):
    return ConfigDict(
        model=tiny_model_cfg(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=dict(type='EngineTinySegDataset'),
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
                end=SCHEDULE_END,
                by_epoch=False)
        ],
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=max_iters),
        default_hooks=dict(
            checkpoint=dict(
                type=checkpoint_type,
                interval=CKPT_INTERVAL,
                by_epoch=False,
                max_keep_ckpts=max_keep_ckpts),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[dict(type='EngineSlowIterHook', seconds=sleep)],
        default_scope='mmseg',
        randomness=dict(seed=seed, deterministic=True),
        resume=resume,
        log_level='INFO')


def die_at_fsync(name_prefix, count=1):
    """SIGKILL this process at the ``count``-th fsync of a file whose name
    (or whose atomic-write partial file's name) starts with ``name_prefix``.
    """
    real_fsync = os.fsync
    seen = [0]

    def fsync(fd):
        try:
            path = os.readlink(f'/proc/self/fd/{fd}')
        except OSError:
            path = ''
        base = os.path.basename(path)
        if base.lstrip('.').startswith(name_prefix):
            seen[0] += 1
            if seen[0] == count:
                os.kill(os.getpid(), signal.SIGKILL)
        return real_fsync(fd)

    os.fsync = fsync


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('work_dir')
    parser.add_argument('--max-iters', type=int, required=True)
    parser.add_argument('--resume', action='store_true')
    parser.add_argument('--sleep', type=float, default=0.0)
    parser.add_argument('--max-keep-ckpts', type=int, default=-1)
    parser.add_argument('--die-at-fsync', default=None)
    parser.add_argument('--die-at-count', type=int, default=1)
    args = parser.parse_args(argv)
    if args.die_at_fsync:
        die_at_fsync(args.die_at_fsync, args.die_at_count)
    runner = Runner.from_cfg(
        tiny_cfg(
            args.work_dir,
            args.max_iters,
            resume=args.resume,
            sleep=args.sleep,
            max_keep_ckpts=args.max_keep_ckpts))
    runner.train()
    return 0


if __name__ == '__main__':
    sys.exit(main())
