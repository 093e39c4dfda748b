"""A tiny mmseg training set-up for the engine tests, usable as a script.

``python -m helpers.tiny_runner WORK_DIR --max-iters N [--clip] [--resume]
[--sleep S] [--die-at-fsync NAME [--die-at-count K]]`` (``tests/`` on
``PYTHONPATH``) trains the tiny single-frame model of
:mod:`helpers.tiny_models` on a few random images, or with ``--clip`` its
LMA version on random clips through a numpy-driven clip augmentation, with
mmengine's Runner and the AtomicCheckpointHook.
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

from mmengine.config import ConfigDict
from mmengine.hooks import Hook
from mmengine.runner import Runner
from mmseg.registry import HOOKS

import lma_mmseg  # noqa: F401
from helpers.config_text import unformatted_configs
from helpers.tiny_models import lma_model_cfg, single_model_cfg

CKPT_INTERVAL = 3
SCHEDULE_END = 40  # iterations of the LR schedule, whatever max_iters is


@HOOKS.register_module(force=True)
class EngineSlowIterHook(Hook):
    """Sleeps after every training iteration (gives a killer time)."""

    def __init__(self, seconds=0.0):
        self.seconds = seconds

    def after_train_iter(
            self, runner, batch_idx, data_batch=None, outputs=None):
        time.sleep(self.seconds)


def tiny_cfg(
        work_dir,
        max_iters,
        resume=False,
        seed=0,
        sleep=0.0,
        max_keep_ckpts=-1,
        checkpoint_type='AtomicCheckpointHook',
        clip=False):
    """The Runner config; ``clip``: the LMA model on augmented clips."""
    if clip:
        model = lma_model_cfg(memory_length=2, video_preprocessor=True)
        dataset = dict(type='TinyClipDataset')
    else:
        model = single_model_cfg()
        dataset = dict(type='TinySegDataset')
    model['data_preprocessor']['size'] = (32, 32)
    return ConfigDict(
        model=model,
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=dataset,
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
    parser.add_argument('--clip', action='store_true')
    parser.add_argument('--sleep', type=float, default=0.0)
    parser.add_argument('--max-keep-ckpts', type=int, default=-1)
    parser.add_argument('--die-at-fsync', default=None)
    parser.add_argument('--die-at-count', type=int, default=1)
    args = parser.parse_args(argv)
    if args.die_at_fsync:
        die_at_fsync(args.die_at_fsync, args.die_at_count)
    # as in the test processes: configs without yapf formatting
    with unformatted_configs():
        runner = Runner.from_cfg(
            tiny_cfg(
                args.work_dir,
                args.max_iters,
                resume=args.resume,
                sleep=args.sleep,
                max_keep_ckpts=args.max_keep_ckpts,
                clip=args.clip))
        runner.train()
    return 0


if __name__ == '__main__':
    sys.exit(main())
