from .atomic_checkpoint_hook import AtomicCheckpointHook
from .train_loss_metric_hook import TrainLossMetricHook

__all__ = ['AtomicCheckpointHook', 'TrainLossMetricHook']
