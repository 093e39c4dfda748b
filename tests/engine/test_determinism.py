"""Same seed and ``deterministic=True`` give identical losses on CPU."""
import os.path as osp

from mmengine.config import Config
from mmengine.runner import Runner

import lma_mmseg  # noqa: F401
from helpers.tiny_models import clip_augmentation

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO_CONFIG = osp.join(ROOT, 'configs', 'demo', 'lma-erfnet_demo.py')
ITERS = 4
# the demo pipeline without the upscaling, for 64x128 frames
SMALL_PIPELINE = [
    dict(type='LoadClipFromFiles'),
    clip_augmentation((48, 96)),
    dict(type='PackClipSegInputs'),
]


def _train_losses(cfg):
    # a name of its own: Runners built within the same second would
    # otherwise share one MessageHub (named after the timestamp)
    cfg.experiment_name = f'determinism_{osp.basename(cfg.work_dir)}'
    runner = Runner.from_cfg(cfg)
    runner.train()
    return list(runner.message_hub.get_scalar('train/loss').data[0])


def _lma_demo_losses(work_dir, data_root, seed):
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.merge_from_dict(
        dict(
            work_dir=str(work_dir),
            load_from=None,
            train_dataloader=dict(
                batch_size=2,
                num_workers=0,
                persistent_workers=False,
                dataset=dict(data_root=str(data_root))),
            model=dict(data_preprocessor=dict(size=(48, 96))),
            train_cfg=dict(max_iters=ITERS, val_interval=10**6),
            default_hooks=dict(
                logger=dict(interval=1),
                checkpoint=dict(interval=10**6, save_last=False)),
            randomness=dict(seed=seed, deterministic=True),
            val_dataloader=None,
            val_cfg=None,
            val_evaluator=None,
            test_dataloader=None,
            test_cfg=None,
            test_evaluator=None))
    cfg.train_dataloader.dataset.pipeline = SMALL_PIPELINE
    for key in ('val_dataloader', 'val_cfg', 'val_evaluator',
                'test_dataloader', 'test_cfg', 'test_evaluator'):
        cfg[key] = None
    return _train_losses(cfg)


def test_same_seed_same_losses_lma_demo(tmp_path, demo_data):
    """configs/demo/lma-erfnet_demo.py (random crops and flips, dropout in
    the fusion) on a few small demo clips."""
    first = _lma_demo_losses(tmp_path / 'a', demo_data, seed=0)
    second = _lma_demo_losses(tmp_path / 'b', demo_data, seed=0)
    assert len(first) == ITERS
    assert first == second  # bitwise
