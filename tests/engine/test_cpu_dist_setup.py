"""The CPU start-up of a torchrun launch and the DDP wrapper work without
CUDA (1 process), and importing the package patches nothing of mmengine."""
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.registry import MODEL_WRAPPERS

import lma_mmseg  # noqa: F401
from lma_mmseg.engine import (DeviceAwareDistributedDataParallel,
                              setup_cpu_distributed, shutdown_distributed)

needs_no_cuda = pytest.mark.skipif(
    torch.cuda.is_available(), reason='checks the CPU-only start-up')


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture
def single_process_env(monkeypatch):
    for key, value in dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1',
                           MASTER_ADDR='127.0.0.1',
                           MASTER_PORT=str(_free_port())).items():
        monkeypatch.setenv(key, value)
    yield
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def test_import_leaves_mmengine_launcher_alone():
    code = ('import mmengine.dist.utils as u; f = u._init_dist_pytorch; '
            'import lma_mmseg; print(u._init_dist_pytorch is f)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == 'True'


def test_other_launchers_are_left_alone():
    cfg = Config(dict(launcher='none', env_cfg=dict(
        dist_cfg=dict(backend='nccl'))))
    assert not setup_cpu_distributed(cfg)
    assert cfg.env_cfg.dist_cfg.backend == 'nccl'
    assert 'model_wrapper_cfg' not in cfg
    assert not torch_dist.is_initialized()


@needs_no_cuda
def test_nccl_config_gets_gloo_and_cpu_wrapper(single_process_env):
    cfg = Config(dict(launcher='pytorch', env_cfg=dict(
        dist_cfg=dict(backend='nccl', timeout=60))))
    assert setup_cpu_distributed(cfg)
    assert cfg.env_cfg.dist_cfg == dict(backend='gloo', timeout=60)
    assert cfg.model_wrapper_cfg == dict(
        type='DeviceAwareDistributedDataParallel')
    assert torch_dist.is_initialized()
    assert torch_dist.get_backend() == 'gloo'
    # a second call (e.g. by the Runner's set-up) reuses the group
    assert setup_cpu_distributed(cfg)


@needs_no_cuda
def test_gloo_launcher_and_cpu_ddp_wrapper(single_process_env):
    setup_cpu_distributed(Config(dict(launcher='pytorch')))
    assert torch_dist.is_initialized()
    assert torch_dist.get_backend() == 'gloo'
    assert MODEL_WRAPPERS.get('DeviceAwareDistributedDataParallel') is \
        DeviceAwareDistributedDataParallel
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    # the Runner passes device_ids=[LOCAL_RANK]; PyTorch refuses it for CPU
    with pytest.raises(ValueError, match='device_ids'):
        torch.nn.parallel.DistributedDataParallel(model, device_ids=[0])
    wrapped = MODEL_WRAPPERS.build(
        dict(type='DeviceAwareDistributedDataParallel'),
        default_args=dict(module=model, device_ids=[0]))
    assert wrapped.device_ids is None
    out = wrapped(torch.ones(2, 4))
    out.sum().backward()
    assert model[0].weight.grad is not None


@needs_no_cuda
def test_shutdown_ends_the_process_group(single_process_env):
    """The launch scripts end the process group they started before the
    interpreter exits; without one it does nothing."""
    shutdown_distributed()
    assert setup_cpu_distributed(Config(dict(launcher='pytorch')))
    assert torch_dist.is_initialized()
    shutdown_distributed()
    assert not torch_dist.is_initialized()
    shutdown_distributed()
