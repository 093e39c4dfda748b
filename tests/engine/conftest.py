import importlib.util
import os.path as osp

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.fixture(scope='session')
def demo_data(tmp_path_factory):
    """A few demo clips (64x128) written by tools/make_demo_data.py."""
    root = tmp_path_factory.mktemp('engine_demo') / 'demo'
    spec = importlib.util.spec_from_file_location(
        'make_demo_data', osp.join(ROOT, 'tools', 'make_demo_data.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(
        [
            '--out',
            str(root), '--size', '64', '128', '--num-train', '4', '--num-val',
            '1', '--num-test', '1', '--frames', 'memory'
        ])
    return root


@pytest.fixture(autouse=True)
def restore_determinism_flags():
    """Runners built with ``randomness.deterministic=True`` switch torch to
    deterministic algorithms process-wide; put the flags back afterwards."""
    algorithms = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
