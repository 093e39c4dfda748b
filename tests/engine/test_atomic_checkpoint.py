"""Checkpoints are written atomically; a kill mid-save never breaks resume."""
import os
import os.path as osp
import signal
import subprocess
import sys

import pytest
import torch
from mmengine.fileio import get_file_backend
from mmengine.runner import Runner

import lma_mmseg  # noqa: F401
from helpers.tiny_runner import CKPT_INTERVAL, tiny_cfg
from helpers.tools import tool_env
from lma_mmseg.engine import AtomicCheckpointHook, AtomicLocalBackend
from lma_mmseg.fileio import atomic_write_bytes, stale_temp_files

needs_proc = pytest.mark.skipif(
    not osp.isdir('/proc/self/fd'), reason='needs /proc/self/fd (Linux)')


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / 'sub' / 'f.bin'
    atomic_write_bytes(path, b'old')
    atomic_write_bytes(path, b'new content')
    assert path.read_bytes() == b'new content'
    assert stale_temp_files(path.parent) == []
    # the permissions are those open() gives, not mkstemp's 0600
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~umask)


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / 'f.bin'
    path.write_bytes(b'good')

    def broken_fsync(fd):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(os, 'fsync', broken_fsync)
    with pytest.raises(OSError, match='No space left'):
        atomic_write_bytes(path, b'x' * 1000)
    monkeypatch.undo()
    assert path.read_bytes() == b'good'
    assert stale_temp_files(tmp_path) == []  # the partial file is cleaned up


def test_atomic_write_rejects_non_bytes(tmp_path):
    with pytest.raises(TypeError, match='must be bytes'):
        atomic_write_bytes(tmp_path / 'f.bin', 'text')


def test_backend_is_selectable_by_backend_args(tmp_path):
    backend = get_file_backend(
        str(tmp_path), backend_args=dict(backend='atomic_local'))
    assert isinstance(backend, AtomicLocalBackend)
    backend.put(b'abc', str(tmp_path / 'a' / 'b.bin'))
    backend.put_text('hello', str(tmp_path / 'c.txt'))
    assert backend.get(str(tmp_path / 'a' / 'b.bin')) == b'abc'
    assert backend.get_text(str(tmp_path / 'c.txt')) == 'hello'


def test_hook_defaults_to_atomic_backend_for_local_dirs():
    assert AtomicCheckpointHook(interval=1).backend_args == dict(
        backend='atomic_local')
    assert AtomicCheckpointHook(
        interval=1,
        out_dir='/some/dir').backend_args == dict(backend='atomic_local')
    # explicit choices and remote folders are left alone
    assert AtomicCheckpointHook(
        interval=1, backend_args=dict(backend='local')).backend_args == dict(
            backend='local')
    assert AtomicCheckpointHook(
        interval=1, out_dir='s3://bucket/ckpts').backend_args is None


def _run_tiny(work_dir, *args, timeout=300):
    return subprocess.run(
        [sys.executable, '-m', 'helpers.tiny_runner',
         str(work_dir), *args],
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=timeout)


@needs_proc
def test_kill_while_writing_checkpoint_then_resume(tmp_path):
    """SIGKILL while ``iter_6.pth`` is being written, then ``resume``.

    ``last_checkpoint`` must still name the complete ``iter_3.pth`` (which
    ``max_keep_ckpts=1`` must not have deleted yet); resuming starts from
    it and cleans up the partial file.
    """
    first, second = CKPT_INTERVAL, 2 * CKPT_INTERVAL
    proc = _run_tiny(
        tmp_path, '--max-iters', str(3 * CKPT_INTERVAL), '--max-keep-ckpts',
        '1', '--die-at-fsync', f'iter_{second}.pth')
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    pointer = (tmp_path / 'last_checkpoint').read_text()
    assert pointer == str(tmp_path / f'iter_{first}.pth')
    assert not (tmp_path / f'iter_{second}.pth').exists()
    assert len(stale_temp_files(tmp_path)) == 1, \
        "the kill leaves a partial file"
    assert torch.load(pointer, map_location='cpu')['meta']['iter'] == first

    runner = Runner.from_cfg(
        tiny_cfg(tmp_path, max_iters=second, resume=True, max_keep_ckpts=1))
    runner.train()
    assert runner.iter == second
    log = open(osp.join(runner.log_dir, f'{runner.timestamp}.log')).read()
    assert f'Load checkpoint from {pointer}' in log
    assert f'resumed epoch: 0, iter: {first}' in log
    assert 'removed the partial file' in log
    assert stale_temp_files(tmp_path) == []
    assert (tmp_path / 'last_checkpoint').read_text() == str(
        tmp_path / f'iter_{second}.pth')
    ckpt = torch.load(tmp_path / f'iter_{second}.pth', map_location='cpu')
    assert ckpt['meta']['iter'] == second
    # the losses of iterations 1..3 came from the checkpoint, 4..6 are new
    assert len(ckpt['message_hub']['log_scalars']['train/loss'].data[0]) \
        == second
    # max_keep_ckpts=1 removed the older one once the new one was saved
    assert sorted(
        p.name for p in tmp_path.glob('iter_*.pth')) == [f'iter_{second}.pth']


@needs_proc
def test_kill_while_writing_pointer_keeps_last_good(tmp_path):
    """SIGKILL while ``last_checkpoint`` is updated to name ``iter_6.pth``:
    the pointer still names the complete ``iter_3.pth``, which still exists,
    and ``iter_6.pth`` is complete too."""
    first, second = CKPT_INTERVAL, 2 * CKPT_INTERVAL
    proc = _run_tiny(
        tmp_path, '--max-iters', str(3 * CKPT_INTERVAL), '--max-keep-ckpts',
        '1', '--die-at-fsync', 'last_checkpoint', '--die-at-count', '2')
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    pointer = (tmp_path / 'last_checkpoint').read_text()
    assert pointer == str(tmp_path / f'iter_{first}.pth')
    assert torch.load(pointer, map_location='cpu')['meta']['iter'] == first
    assert torch.load(
        tmp_path / f'iter_{second}.pth',
        map_location='cpu')['meta']['iter'] == second
    assert [osp.basename(p) for p in stale_temp_files(tmp_path)
            ][0].startswith('.last_checkpoint.')


def _with_validation(cfg, interval):
    cfg.val_dataloader = dict(
        dataset=dict(type='TinySegDataset', num=2),
        sampler=dict(type='DefaultSampler', shuffle=False),
        collate_fn=dict(type='pseudo_collate'),
        batch_size=1,
        num_workers=0)
    cfg.val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
    cfg.val_cfg = dict(type='ValLoop')
    cfg.train_cfg.val_interval = interval
    return cfg


def test_save_best_resaves_latest_atomically(tmp_path):
    """With ``save_best`` mmengine re-saves the latest checkpoint after a
    new best one; the hook does it (pointer last, outdated one removed
    after) and the best checkpoint is written as mmengine writes it."""
    cfg = _with_validation(
        tiny_cfg(tmp_path, max_iters=2 * CKPT_INTERVAL, max_keep_ckpts=1),
        CKPT_INTERVAL)
    cfg.default_hooks.checkpoint.save_best = 'mIoU'
    cfg.default_hooks.checkpoint.rule = 'greater'
    cfg.experiment_name = 'save_best'
    runner = Runner.from_cfg(cfg)
    runner.train()
    last = tmp_path / f'iter_{2 * CKPT_INTERVAL}.pth'
    assert (tmp_path / 'last_checkpoint').read_text() == str(last)
    assert sorted(p.name for p in tmp_path.glob('iter_*.pth')) == [last.name]
    best = sorted(tmp_path.glob('best_mIoU_iter_*.pth'))
    assert len(best) == 1
    hub = torch.load(last, map_location='cpu')['message_hub']
    assert hub['runtime_info']['best_ckpt'] == str(best[0])
    assert 'best_score' in hub['runtime_info']
    assert stale_temp_files(tmp_path) == []


def test_epoch_based_resume_restores_random_states(tmp_path):
    """An epoch-based run: checkpoints per epoch, and a resumed run restores
    the random states at the start of its first epoch, so it ends with the
    uninterrupted run's weights."""

    def cfg(work_dir, epochs, resume=False):
        c = tiny_cfg(work_dir, max_iters=0, resume=resume)
        c.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=epochs)
        c.train_dataloader.sampler = dict(type='DefaultSampler', shuffle=True)
        c.train_dataloader.dataset.num = 4
        c.default_hooks.checkpoint.update(by_epoch=True, interval=1)
        c.param_scheduler[0].end = 4
        c.experiment_name = f'epochs_{osp.basename(work_dir)}_{int(resume)}'
        return c

    Runner.from_cfg(cfg(tmp_path / 'a', 1)).train()
    resumed = Runner.from_cfg(cfg(tmp_path / 'a', 2, resume=True))
    resumed.train()
    Runner.from_cfg(cfg(tmp_path / 'b', 2)).train()
    assert (tmp_path / 'a' / 'last_checkpoint').read_text() == str(
        tmp_path / 'a' / 'epoch_2.pth')
    a = torch.load(tmp_path / 'a' / 'epoch_2.pth', map_location='cpu')
    b = torch.load(tmp_path / 'b' / 'epoch_2.pth', map_location='cpu')
    for name in b['state_dict']:
        torch.testing.assert_close(
            a['state_dict'][name], b['state_dict'][name], rtol=0, atol=0,
            msg=name)
