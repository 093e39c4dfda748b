import pytest
import torch


@pytest.fixture(autouse=True)
def restore_determinism_flags():
    """Runners built with ``randomness.deterministic=True`` switch torch to
    deterministic algorithms process-wide; put the flags back afterwards."""
    algorithms = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
