"""The pytorch launcher and the DDP wrapper work without CUDA (1 process)."""
import socket

import pytest
import torch
import torch.distributed as torch_dist
from mmengine.dist import init_dist
from mmengine.registry import MODEL_WRAPPERS

import lma_mmseg  # noqa: F401
from lma_mmseg.engine import DeviceAwareDistributedDataParallel

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


@needs_no_cuda
def test_nccl_without_cuda_is_refused_clearly(single_process_env):
    with pytest.raises(RuntimeError, match="backend='gloo'"):
        init_dist('pytorch', backend='nccl')
    assert not torch_dist.is_initialized()


@needs_no_cuda
def test_gloo_launcher_and_cpu_ddp_wrapper(single_process_env):
    init_dist('pytorch', backend='gloo')
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
