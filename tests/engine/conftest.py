import pytest
import torch

from lma_mmseg.datasets.prep import DemoDataSettings, make_demo_data


@pytest.fixture(scope='session')
def demo_data(tmp_path_factory):
    """A few demo clips (64x128) of the synthetic generator."""
    root = tmp_path_factory.mktemp('engine_demo') / 'demo'
    make_demo_data(
        str(root), DemoDataSettings(size=(64, 128), num_train=4, num_val=1,
                                    num_test=1, frames='memory'))
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
