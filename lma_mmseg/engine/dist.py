"""Distributed start-up on machines without an accelerator (gloo on CPU).

mmengine 0.10.7's PyTorch launcher (``init_dist('pytorch')``, called by the
Runner for ``--launcher pytorch``) always calls ``torch.cuda.set_device``
before ``init_process_group``, and its Runner wraps the model in a
``DistributedDataParallel`` with ``device_ids=[LOCAL_RANK]``; both fail on a
machine without CUDA. The Runner initialises the process group only when it
is not initialised yet (``Runner.setup_env``), so our launch path
(``tools/train.py``, ``tools/test.py``) calls :func:`setup_cpu_distributed`
before building the Runner: on a machine without an accelerator it switches
the config to gloo and to :class:`DeviceAwareDistributedDataParallel` and
starts the process group itself; the Runner then reuses that group. Where an
accelerator is available nothing changes.
"""
import argparse
import datetime
import logging
import os

import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.device import (is_mlu_available, is_musa_available,
                             is_npu_available)
from mmengine.logging import print_log

CPU_BACKEND = 'gloo'
CPU_WRAPPER = 'DeviceAwareDistributedDataParallel'


def has_accelerator() -> bool:
    """Whether mmengine would run on an accelerator here (CUDA, MLU, NPU,
    MUSA)."""
    return (
        torch.cuda.is_available() or is_mlu_available() or is_npu_available()
        or is_musa_available())


def setup_cpu_distributed(cfg: Config) -> bool:
    """Prepare a ``--launcher pytorch`` run on a machine without accelerator.

    When ``cfg.launcher`` is ``'pytorch'`` and no accelerator is available:

    * ``cfg.env_cfg.dist_cfg.backend`` becomes ``'gloo'`` (a ``'nccl'`` or
      missing backend is replaced, with a log message; nccl needs CUDA);
    * ``cfg.model_wrapper_cfg`` becomes
      ``dict(type='DeviceAwareDistributedDataParallel')`` unless the config
      names another wrapper than mmengine's default
      ``MMDistributedDataParallel`` (which refuses CPU models);
    * the gloo process group is started from torchrun's environment
      (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) with the
      other ``dist_cfg`` arguments (``timeout`` in seconds, as for
      mmengine), unless one is already initialised.

    Call it before ``Runner.from_cfg(cfg)``; the Runner then reuses the
    process group. Elsewhere (another launcher, or an accelerator) the
    function does nothing.

    Args:
        cfg (Config): The run's config; modified in place.

    Returns:
        bool: Whether the CPU set-up was applied.
    """
    if cfg.get('launcher', 'none') != 'pytorch' or has_accelerator():
        return False
    env_cfg = cfg.get('env_cfg') or {}
    dist_cfg = dict(env_cfg.get('dist_cfg') or {})
    backend = dist_cfg.get('backend')
    if backend != CPU_BACKEND:
        print_log(
            f'no accelerator available: distributed backend {backend!r} '
            f'replaced by {CPU_BACKEND!r}', 'current', logging.WARNING)
    dist_cfg['backend'] = CPU_BACKEND
    env_cfg = dict(env_cfg, dist_cfg=dist_cfg)
    cfg.env_cfg = env_cfg
    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None or wrapper.get('type') in (
            'MMDistributedDataParallel', None):
        cfg.model_wrapper_cfg = dict(wrapper or {}, type=CPU_WRAPPER)
    if not torch_dist.is_initialized():
        kwargs = {k: v for k, v in dist_cfg.items() if k != 'backend'}
        timeout = kwargs.get('timeout')
        if timeout is not None:
            if not isinstance(timeout, (int, float)):
                raise TypeError(
                    'env_cfg.dist_cfg.timeout must be a number of seconds, '
                    f'got {type(timeout).__name__}')
            kwargs['timeout'] = datetime.timedelta(seconds=timeout)
        torch_dist.init_process_group(backend=CPU_BACKEND, **kwargs)
    return True


def parse_launcher_args(parser: argparse.ArgumentParser,
                        argv=None) -> argparse.Namespace:
    """Parse a launch script's command line with mmengine's launcher
    options added: ``--launcher {none,pytorch,slurm,mpi}`` and
    ``--local-rank`` (passed by ``torch.distributed.launch``; copied to the
    ``LOCAL_RANK`` environment variable when torchrun did not set it).

    Args:
        parser (argparse.ArgumentParser): The script's parser.
        argv (list[str], optional): Arguments (``sys.argv[1:]`` if None).

    Returns:
        argparse.Namespace
    """
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def shutdown_distributed() -> None:
    """End this process's default process group, if one is running.

    Call it when a launched run is done (``tools/train.py``,
    ``tools/test.py``): a process group left to the interpreter's exit can
    take the process down while its background threads are torn down
    (``terminate called without an active exception``), failing a run
    whose results are already written. Does nothing without a process group.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
