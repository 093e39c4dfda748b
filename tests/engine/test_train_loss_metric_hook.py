"""TrainLossMetricHook lets ReduceOnPlateauLR follow the training loss, as
the authors' scheduler.step(mean_loss_train)."""
import pytest
import torch
from mmengine.optim import OptimWrapper, ReduceOnPlateauLR
from mmseg.registry import HOOKS

import lma_mmseg  # noqa: F401


def _epoch(hook, losses):
    for i, loss in enumerate(losses):
        hook.after_train_iter(None, i, outputs=dict(loss=torch.tensor(loss)))
    metrics = dict(mIoU=50.0)
    hook.after_val_epoch(None, metrics=metrics)
    return metrics


def test_adds_the_epoch_mean_and_resets():
    hook = HOOKS.build(dict(type='TrainLossMetricHook'))
    assert hook.priority == 'NORMAL'
    assert _epoch(hook, [1.0, 2.0, 6.0])['train_loss'] == pytest.approx(3.0)
    assert _epoch(hook, [0.5])['train_loss'] == pytest.approx(0.5)
    # no training since the last validation: nothing added
    metrics = dict(mIoU=1.0)
    hook.after_val_epoch(None, metrics=metrics)
    assert 'train_loss' not in metrics
    with pytest.raises(KeyError, match='loss'):
        hook.after_train_iter(None, 0, outputs=dict(acc=1.0))


def test_reduce_on_plateau_of_the_training_loss():
    param = torch.nn.Parameter(torch.zeros(1))
    optim = OptimWrapper(torch.optim.Adam([param], lr=2e-4))
    scheduler = ReduceOnPlateauLR(
        optim, monitor='train_loss', factor=0.8, patience=1,
        min_value=1e-9, by_epoch=True)
    hook = HOOKS.build(dict(type='TrainLossMetricHook'))
    lrs = []
    for losses in ([1.0], [0.9], [0.95], [0.92], [0.5]):
        scheduler.step(_epoch(hook, losses))
        lrs.append(optim.get_lr()['lr'][0])
    # two epochs without improvement (patience 1) -> x0.8 once
    assert lrs == pytest.approx([2e-4, 2e-4, 2e-4, 1.6e-4, 1.6e-4])
