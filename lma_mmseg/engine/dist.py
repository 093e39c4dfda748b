"""Distributed start-up on machines without CUDA (gloo on CPU).

mmengine 0.10.7's PyTorch launcher (``init_dist('pytorch')``, called by the
Runner for ``--launcher pytorch``) always calls ``torch.cuda.set_device``
before ``init_process_group``. On a machine without a GPU, or with a CPU-only
torch build, that call raises, so torchrun-launched training cannot start on
CPU even with ``env_cfg = dict(dist_cfg=dict(backend='gloo'))``.

:func:`enable_cpu_pytorch_launcher` (applied when :mod:`lma_mmseg` is
imported) wraps mmengine's launcher function: when neither CUDA nor another
accelerator mmengine knows (MLU, NPU, MUSA) is available, it starts the
process group without selecting a device; everywhere else it calls
mmengine's own function unchanged. ``nccl`` on such a machine is refused
with a message that says to use ``gloo``.

Together with the ``DeviceAwareDistributedDataParallel`` model wrapper this
makes ``tools/dist_train.sh`` usable on CPU, e.g. for tests.
"""
import functools

import torch
import torch.distributed as torch_dist
from mmengine.device import (
    is_mlu_available, is_musa_available, is_npu_available)
from mmengine.dist import utils as dist_utils


def _has_accelerator() -> bool:
    return (
        torch.cuda.is_available() or is_mlu_available() or is_npu_available()
        or is_musa_available())


def enable_cpu_pytorch_launcher() -> None:
    """Let mmengine's ``pytorch`` launcher start on CPU-only machines.

    Idempotent. Has no effect where an accelerator is available.
    """
    original = dist_utils._init_dist_pytorch
    if getattr(original, '_lma_cpu_aware', False):
        return

    @functools.wraps(original)
    def _init_dist_pytorch(backend, init_backend='torch', **kwargs):
        if _has_accelerator() or init_backend != 'torch':
            return original(backend, init_backend=init_backend, **kwargs)
        if backend == 'nccl':
            raise RuntimeError(
                'init_dist: the nccl backend needs CUDA, which is not '
                "available here; set env_cfg = dict(dist_cfg=dict(backend="
                "'gloo')) in the config for distributed training on CPU.")
        torch_dist.init_process_group(backend=backend, **kwargs)

    _init_dist_pytorch._lma_cpu_aware = True
    dist_utils._init_dist_pytorch = _init_dist_pytorch


enable_cpu_pytorch_launcher()
