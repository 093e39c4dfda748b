"""A hook for the distributed tests: every rank saves its model state."""
import os.path as osp

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS


@HOOKS.register_module(force=True)
class RankStateDumpHook(Hook):
    """Writes ``rank{r}_{before,after}.pth`` (parameters and buffers) to
    the work dir before and after training, on every rank."""

    priority = 'LOWEST'

    def _dump(self, runner, when):
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        state = dict(
            params={
                k: v.detach().clone()
                for k, v in model.named_parameters()
            },
            trainable=[
                k for k, v in model.named_parameters() if v.requires_grad
            ],
            buffers={
                k: v.clone()
                for k, v in model.named_buffers()
            },
            iter=runner.iter)
        torch.save(
            state, osp.join(runner.work_dir, f'rank{get_rank()}_{when}.pth'))

    def before_train(self, runner):
        self._dump(runner, 'before')

    def after_train(self, runner):
        self._dump(runner, 'after')
