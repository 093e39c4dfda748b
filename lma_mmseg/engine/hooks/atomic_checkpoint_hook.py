"""A CheckpointHook whose checkpoints survive a crash at any moment."""
import os.path as osp
from pathlib import Path
from typing import Optional, Union

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmseg.registry import HOOKS

from ..fileio import atomic_write_text, remove_stale_parts


def _is_local(path) -> bool:
    return path is None or '://' not in str(path)


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
      (:class:`~lma_mmseg.engine.fileio.AtomicLocalBackend`: temporary file
      in the same folder, ``fsync``, ``os.replace``) whenever the
      checkpoints go to a local folder and no ``backend_args`` /
      ``file_client_args`` are given;
    * updates ``last_checkpoint`` atomically, and only after the new
      checkpoint is completely on disk;
    * removes an outdated checkpoint (``max_keep_ckpts``) only after that,
      so up to ``max_keep_ckpts + 1`` checkpoints exist for a moment;
    * removes, before training starts, the temporary ``.*.part`` files an
      interrupted save left in the checkpoint folder (logged).

    So ``last_checkpoint`` always names a complete checkpoint: the newest
    one whose save finished. All arguments are those of
    :class:`~mmengine.hooks.CheckpointHook`.

    Example::

        default_hooks = dict(
            checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False,
                            interval=2000, max_keep_ckpts=3))
    """

    def __init__(self,
                 *args,
                 out_dir: Optional[Union[str, Path]] = None,
                 file_client_args: Optional[dict] = None,
                 backend_args: Optional[dict] = None,
                 **kwargs) -> None:
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
            for path in remove_stale_parts(self.out_dir):
                runner.logger.warning(
                    'AtomicCheckpointHook: removed the partial file of an '
                    f'interrupted checkpoint save: {path}')

    def _save_checkpoint_with_step(self, runner, step, meta):
        outdated = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and
                                            self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir,
                                                     ckpt_filename)
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
        atomic_write_text(self.last_ckpt,
                          osp.join(runner.work_dir, 'last_checkpoint'))

        if outdated is not None and outdated != step:
            path = self.file_backend.join_path(
                self.out_dir, self.filename_tmpl.format(outdated))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):
                # checkpoints saved by deepspeed are directories
                self.file_backend.rmtree(path)
