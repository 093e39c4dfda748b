"""Training infrastructure: crash-safe checkpoints, distributed start-up.

Importing it registers the ``'atomic_local'`` file backend, the
``AtomicCheckpointHook`` and ``TrainLossMetricHook`` hooks and the
``DeviceAwareDistributedDataParallel`` model wrapper.
:func:`parse_launcher_args` adds mmengine's launcher options to a launch
script's parser; :func:`setup_cpu_distributed` prepares a torchrun launch
on a machine without an accelerator (both used by ``tools/train.py`` and
``tools/test.py``).
"""
from .dist import (has_accelerator, parse_launcher_args, setup_cpu_distributed,
                   shutdown_distributed)
from .fileio import AtomicLocalBackend
from .hooks import AtomicCheckpointHook, TrainLossMetricHook
from .model_wrappers import DeviceAwareDistributedDataParallel

__all__ = [
    'AtomicLocalBackend', 'AtomicCheckpointHook', 'TrainLossMetricHook',
    'DeviceAwareDistributedDataParallel', 'has_accelerator',
    'parse_launcher_args', 'setup_cpu_distributed', 'shutdown_distributed'
]
