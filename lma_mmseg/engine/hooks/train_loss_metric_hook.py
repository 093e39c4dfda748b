"""Put the mean training loss of an epoch into the validation metrics."""
from typing import Optional

import torch
from mmengine.dist import all_reduce, get_world_size
from mmengine.hooks import Hook
from mmseg.registry import HOOKS


@HOOKS.register_module()
class TrainLossMetricHook(Hook):
    """Add the mean training loss since the last validation to the
    validation metrics, under ``key``.

    mmengine's ``ReduceOnPlateauLR`` is stepped after each validation with
    the validation metrics (``ParamSchedulerHook.after_val_epoch``), so it
    can only monitor what the evaluator returns. The Local Memory Attention
    authors reduce the learning rate on a plateau of the *training* loss
    (``scheduler.step(mean_loss_train)`` after every epoch). With this hook,
    ``ReduceOnPlateauLR(monitor='train_loss')`` does the same: the hook
    averages ``outputs[loss_key]`` of every training iteration (the total
    loss of a batch), averages over ranks (each rank steps its own scheduler,
    so all ranks get the same value), and writes the mean into the metrics
    before the scheduler and checkpoint hooks read them (priority
    ``'NORMAL'``, above their ``'LOW'`` and ``'VERY_LOW'``), and into the
    message hub, so the validation log shows it. Validate once
    per epoch (``val_interval=1``) to step on the epoch's loss. A validation
    without training iterations before it adds nothing.

    Args:
        key (str): Name of the added metric. Defaults to ``'train_loss'``.
        loss_key (str): Key of the loss in the training step's outputs.
            Defaults to ``'loss'``.
    """

    priority = 'NORMAL'

    def __init__(self, key: str = 'train_loss', loss_key: str = 'loss'):
        self.key = key
        self.loss_key = loss_key
        self._sum = 0.0
        self._count = 0

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        if not outputs or self.loss_key not in outputs:
            raise KeyError(
                f'{type(self).__name__}: the training step returned no '
                f'{self.loss_key!r} (got {sorted(outputs or {})})')
        loss = outputs[self.loss_key]
        self._sum += float(loss.detach() if isinstance(loss, torch.Tensor)
                           else loss)
        self._count += 1

    def after_val_epoch(self, runner, metrics: Optional[dict] = None) -> None:
        if metrics is None or self._count == 0:
            return
        mean = self._sum / self._count
        if get_world_size() > 1:
            # mmengine moves the tensor to the backend's device and back.
            value = torch.tensor(mean, dtype=torch.float64)
            all_reduce(value, op='mean')
            mean = float(value)
        metrics[self.key] = mean
        if runner is not None:  # logged with the validation metrics
            runner.message_hub.update_scalar(f'val/{self.key}', mean)
        self._sum, self._count = 0.0, 0
