"""A CheckpointHook whose checkpoints survive a crash at any moment."""
import os.path as osp
import random
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from mmengine.dist import get_world_size, is_main_process
from mmengine.hooks import CheckpointHook
from mmseg.registry import HOOKS

from ...fileio import atomic_write_text, remove_stale_temp_files


def _is_local(path) -> bool:
    return path is None or '://' not in str(path)


def _get_rng_state() -> dict:
    """The random states of Python, numpy and torch, as plain objects that
    the weights-only checkpoint loader accepts."""
    np_state = np.random.get_state()
    state = dict(
        python=random.getstate(),
        numpy=(
            np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state['python'])
    name, keys, *rest = state['numpy']
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        cuda = state['cuda']
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


class _RestoreBeforeBatch:
    """Wraps a dataloader iterator: calls ``restore`` right before batch
    number ``skip`` (0-based) is drawn, i.e. after ``skip`` skipped ones."""

    def __init__(self, iterator, skip: int, restore) -> None:
        self.iterator = iterator
        self.remaining = skip
        self.restore = restore

    def __iter__(self):
        return self

    def __next__(self):
        if self.remaining == 0:
            self.restore()
        self.remaining -= 1
        return next(self.iterator)

    def __getattr__(self, name):
        return getattr(self.iterator, name)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """:class:`~mmengine.hooks.CheckpointHook` that never leaves a broken or
    missing checkpoint behind ``last_checkpoint``.

    mmengine 0.10's hook (1) writes ``iter_N.pth`` in place, (2) writes the
    ``last_checkpoint`` pointer in place and (3) with ``max_keep_ckpts``
    deletes the oldest checkpoint *before* the new one is written. A process
    killed during a save can therefore leave a truncated ``iter_N.pth``, an
    empty ``last_checkpoint``, or no loadable checkpoint at all, and
    ``--resume`` fails or starts over. This hook:

    * writes checkpoints through the ``'atomic_local'`` file backend
      (:class:`~lma_mmseg.engine.fileio.AtomicLocalBackend`, built on
      :mod:`lma_mmseg.fileio`) whenever the
      checkpoints go to a local folder and no ``backend_args`` /
      ``file_client_args`` are given;
    * updates ``last_checkpoint`` atomically, and only after the new
      checkpoint is completely on disk;
    * removes an outdated checkpoint (``max_keep_ckpts``) only after that,
      so up to ``max_keep_ckpts + 1`` checkpoints exist for a moment;
    * removes, before training starts, the temporary files an interrupted
      save left in the checkpoint folder (logged);
    * with ``save_rng_state=True`` (default) stores the random states of
      Python, numpy and torch (CPU and CUDA) in the checkpoint's message hub
      and, after ``resume``, restores them right before the first resumed
      batch is drawn (after mmengine's iteration-based loop has skipped the
      batches already trained; at the start of the first resumed epoch for
      epoch-based loops), so random data augmentation run in the main process
      (``num_workers=0``) and random layers (dropout) continue as in an
      uninterrupted run. Dataloader workers restart from the seed, as in
      mmengine. The states are restored on every rank only
      when ranks share their seed (``randomness.diff_rank_seed=False``, the
      default) or there is one rank; otherwise a warning says they are not.

    So ``last_checkpoint`` always names a complete checkpoint: the newest
    one whose save finished.

    Args:
        save_rng_state (bool): Save and restore the random states as above.
            Defaults to True.
        **kwargs: The arguments of :class:`~mmengine.hooks.CheckpointHook`.

    Example::

        default_hooks = dict(
            checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False,
                            interval=2000, max_keep_ckpts=3))
    """

    def __init__(
            self,
            *args,
            out_dir: Optional[Union[str, Path]] = None,
            file_client_args: Optional[dict] = None,
            backend_args: Optional[dict] = None,
            save_rng_state: bool = True,
            **kwargs) -> None:
        self.save_rng_state = save_rng_state
        self._pending_rng_state = None
        if (backend_args is None and file_client_args is None
                and _is_local(out_dir)):
            backend_args = dict(backend='atomic_local')
        super().__init__(
            *args,
            out_dir=out_dir,
            file_client_args=file_client_args,
            backend_args=backend_args,
            **kwargs)

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if is_main_process() and _is_local(self.out_dir) and osp.isdir(
                self.out_dir):
            for path in remove_stale_temp_files(self.out_dir):
                runner.logger.warning(
                    'AtomicCheckpointHook: removed the partial file of an '
                    f'interrupted checkpoint save: {path}')
        # before_train runs after Runner.resume: only a resumed run has
        # random states in its message hub at this point. They are applied
        # at the first iteration (once, not at every epoch).
        self._pending_rng_state = None
        if not self.save_rng_state or runner.iter == 0:
            return
        state = runner.message_hub.get_info('rng_state')
        if state is None:
            return
        diff_rank_seed = runner.cfg.get('randomness',
                                        {}).get('diff_rank_seed', False)
        if get_world_size() > 1 and diff_rank_seed:
            runner.logger.warning(
                'AtomicCheckpointHook: the checkpoint holds the random '
                'states of rank 0 only and ranks use different seeds '
                '(randomness.diff_rank_seed=True); not restoring them.')
            return
        self._pending_rng_state = state
        loop = runner.train_loop
        iterator = getattr(loop, 'dataloader_iterator', None)
        if iterator is not None:
            # iteration-based: the loop skips runner.iter batches, then draws
            # the first resumed one
            loop.dataloader_iterator = _RestoreBeforeBatch(
                iterator, runner.iter, lambda: self._restore(runner))

    def before_train_epoch(self, runner) -> None:
        super().before_train_epoch(runner)
        # epoch-based: before the epoch's dataloader iterator is created
        if not hasattr(runner.train_loop, 'dataloader_iterator'):
            self._restore(runner)

    def _restore(self, runner) -> None:
        if self._pending_rng_state is None:
            return
        _set_rng_state(self._pending_rng_state)
        self._pending_rng_state = None
        runner.logger.info(
            'AtomicCheckpointHook: restored the random '
            f'states saved at iteration {runner.iter}.')

    # mmengine's CheckpointHook saves through its private
    # ``_save_checkpoint_with_step``, which deletes the oldest checkpoint
    # before writing the new one and writes ``last_checkpoint`` in place. This
    # hook takes over the public entry points that save instead and saves
    # with :meth:`save_checkpoint`.
    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs=None) -> None:
        """Save every ``interval`` iterations (and the last one with
        ``save_last``), as :class:`~mmengine.hooks.CheckpointHook` does."""
        if self.by_epoch:
            return
        if self.every_n_train_iters(runner, self.interval,
                                    self.save_begin) or (
                                        self.save_last
                                        and self.is_last_train_iter(runner)):
            runner.logger.info(
                f'Saving checkpoint at {runner.iter + 1} iterations')
            step = runner.iter + 1
            self.save_checkpoint(
                runner, step, dict(epoch=runner.epoch, iter=step))

    def after_train_epoch(self, runner) -> None:
        """Save every ``interval`` epochs (and the last one with
        ``save_last``), as :class:`~mmengine.hooks.CheckpointHook` does."""
        if not self.by_epoch:
            return
        if self.every_n_epochs(runner, self.interval, self.save_begin) or (
                self.save_last and self.is_last_train_epoch(runner)):
            runner.logger.info(
                f'Saving checkpoint at {runner.epoch + 1} epochs')
            step = runner.epoch + 1
            self.save_checkpoint(
                runner, step, dict(epoch=step, iter=runner.iter))

    def after_val_epoch(self, runner, metrics) -> None:
        """Save the best checkpoint (``save_best``) as
        :class:`~mmengine.hooks.CheckpointHook` does, then re-save the latest
        checkpoint atomically when the best one changed (it records the best
        score for resuming)."""
        last_ckpt = self.last_ckpt
        best_before = self._best_paths()
        # With last_ckpt unset, mmengine's hook does not re-save the latest
        # checkpoint itself (it would write last_checkpoint in place).
        self.last_ckpt = None
        try:
            super().after_val_epoch(runner, metrics)
        finally:
            self.last_ckpt = last_ckpt
        if last_ckpt is not None and self._best_paths() != best_before:
            step = runner.epoch if self.by_epoch else runner.iter
            self.save_checkpoint(
                runner, step, dict(epoch=runner.epoch, iter=runner.iter))

    def _best_paths(self):
        paths = dict(getattr(self, 'best_ckpt_path_dict', None) or {})
        paths[None] = getattr(self, 'best_ckpt_path', None)
        return paths

    def save_checkpoint(self, runner, step: int, meta: dict) -> None:
        """Save ``filename_tmpl.format(step)`` so that ``last_checkpoint``
        always names a complete checkpoint.

        The checkpoint is written through :attr:`backend_args` (atomically
        for local folders), then ``last_checkpoint`` is replaced atomically,
        and only then is an outdated checkpoint (``max_keep_ckpts``) removed.

        Args:
            runner (Runner): The runner.
            step (int): The epoch (``by_epoch``) or iteration of the
                checkpoint.
            meta (dict): ``epoch`` and ``iter`` stored in the checkpoint.
        """
        if self.save_rng_state:
            runner.message_hub.update_info('rng_state', _get_rng_state())
        outdated = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and
                                            self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info(
                'keep_ckpt_ids', list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(
            self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)

        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)

        if not is_main_process():
            return

        # The pointer moves only once the checkpoint is complete.
        atomic_write_text(
            osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)

        if outdated is not None and outdated != step:
            path = self.file_backend.join_path(
                self.out_dir, self.filename_tmpl.format(outdated))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):
                # checkpoints saved by deepspeed are directories
                self.file_backend.rmtree(path)
