"""Settings and fixtures shared by the whole suite.

``make test`` runs the suite on every core with pytest-xdist (``-n``); each
worker process then gets its share of the cores for torch's intra-op threads
and for the OpenMP runtime of the tools it starts, so that workers do not
oversubscribe a small machine.

Inductor (``torch.compile``, AOTInductor) generates its C++ kernels without
SIMD code here and in the tools the tests start
(``TORCHINDUCTOR_VEC_ISA_OK=0``, unless set otherwise): the tests check our
graphs, our op's fake and backward kernels in them and the exported
programs, not inductor's vectoriser, and scalar kernels compile in less
time (a third less for the compiled step).
"""
import os

os.environ.setdefault('TORCHINDUCTOR_VEC_ISA_OK', '0')

import pytest  # noqa: E402
import torch  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

import lma_mmseg  # noqa: F401,E402  (registers the components)


def _worker_threads() -> int:
    """Threads of one xdist worker: the cores shared out between the
    workers (at least one)."""
    workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def pytest_configure(config):
    if os.environ.get('PYTEST_XDIST_WORKER'):
        threads = _worker_threads()
        os.environ.setdefault('OMP_NUM_THREADS', str(threads))
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def mmseg_scope():
    """Build with mmseg's registries, as configs with
    ``default_scope='mmseg'`` do."""
    init_default_scope('mmseg')
