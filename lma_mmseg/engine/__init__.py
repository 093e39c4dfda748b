"""Training infrastructure: crash-safe checkpoints, distributed start-up.

Importing it registers the ``'atomic_local'`` file backend, the
``AtomicCheckpointHook`` and ``TrainLossMetricHook`` hooks and the
``DeviceAwareDistributedDataParallel`` model wrapper, and lets mmengine's
``pytorch`` launcher start on machines without CUDA (see
:mod:`lma_mmseg.engine.dist`).
"""
from . import dist  # noqa: F401  (CPU-capable pytorch launcher)
from .fileio import (
    AtomicLocalBackend, atomic_write_bytes, atomic_write_text,
    remove_stale_parts, stale_parts)
from .hooks import AtomicCheckpointHook, TrainLossMetricHook
from .model_wrappers import DeviceAwareDistributedDataParallel

__all__ = [
    'AtomicLocalBackend', 'atomic_write_bytes', 'atomic_write_text',
    'stale_parts', 'remove_stale_parts', 'AtomicCheckpointHook',
    'TrainLossMetricHook', 'DeviceAwareDistributedDataParallel'
]
