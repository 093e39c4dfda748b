"""Same seed and ``deterministic=True`` give identical losses on CPU."""
from mmengine.runner import Runner

import lma_mmseg  # noqa: F401
from tiny_runner import tiny_cfg

ITERS = 4


def _losses(work_dir, seed):
    cfg = tiny_cfg(work_dir, ITERS, seed=seed)
    cfg.default_hooks.checkpoint.interval = 10**6  # only the final save
    runner = Runner.from_cfg(cfg)
    runner.train()
    return list(runner.message_hub.get_scalar('train/loss').data[0])


def test_same_seed_same_losses(tmp_path):
    first = _losses(tmp_path / 'a', seed=0)
    second = _losses(tmp_path / 'b', seed=0)
    assert len(first) == ITERS
    assert first == second  # bitwise
    # a different seed (initial weights, data order) changes them
    assert _losses(tmp_path / 'c', seed=1) != first
