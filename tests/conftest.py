"""Settings and fixtures shared by the whole suite.

``make test`` runs the suite on every core with pytest-xdist (``-n``); each
worker process then gets its share of the cores for torch's intra-op threads
and for the OpenMP runtime of the tools it starts, so that workers do not
oversubscribe a small machine.

The test files that take the longest go to the workers first
(:data:`LONG_FILES`; the Makefile passes ``--no-loadscope-reorder`` so that
pytest-xdist keeps this order instead of sorting the files by their number of
tests), so that no worker is left running a long file at the end while the
other has nothing to do. The controller of the workers imports neither
torch nor mmseg (it runs no test), so the workers start sooner.

Inductor (``torch.compile``, AOTInductor) generates its C++ kernels without
SIMD code here and in the tools the tests start
(``TORCHINDUCTOR_VEC_ISA_OK=0``, unless set otherwise): the tests check our
graphs, our op's fake and backward kernels in them and the exported
programs, not inductor's vectoriser, and scalar kernels compile in less
time (a third less for the compiled step). For the same reason AOTInductor
compiles the C++ wrapper of an exported program without optimisation
(``AOT_INDUCTOR_COMPILE_WRAPPER_OPT_LEVEL=O0``: a fifth less for an
export). Each process compiles its kernels itself
(``TORCHINDUCTOR_COMPILE_THREADS=1``): a worker has one core's share, and a
pool of compile processes per worker (each importing torch) costs more than
it gains on a small machine.
"""
import os

os.environ.setdefault('TORCHINDUCTOR_VEC_ISA_OK', '0')
os.environ.setdefault('AOT_INDUCTOR_COMPILE_WRAPPER_OPT_LEVEL', 'O0')
os.environ.setdefault('TORCHINDUCTOR_COMPILE_THREADS', '1')

import pytest  # noqa: E402


def _worker_threads() -> int:
    """Threads of one xdist worker: the cores shared out between the
    workers (at least one)."""
    workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
    return max(1, (os.cpu_count() or 1) // max(1, workers))


# Files of about 15 s or more on one core of the 2-core machine (pytest
# --durations, summed per file), longest first.
LONG_FILES = (
    'tests/apis/test_compile.py',
    'tests/tools/test_gpu_check.py',
    'tests/apis/test_export.py',
    'tests/engine/test_dist_train.py',
    'tests/configs/test_configs.py',
    'tests/apis/test_strided_memory.py',
    'tests/ops/test_local_attention_library.py',
    'tests/engine/test_resume_after_kill.py',
    'tests/configs/test_demo_train.py',
    'tests/tools/test_test_tool.py',
    'tests/tools/test_temporal_suite.py',
    'tests/ops/test_local_attention_cuda.py',
    'tests/configs/test_paper_configs.py',
)


def pytest_collection_modifyitems(session, config, items):
    """The tests of :data:`LONG_FILES` first, in that order; the others
    after them in their collection order. A listed file that is gone
    (renamed, split) stops the run, so the list cannot rot."""
    for name in LONG_FILES:
        if not (config.rootpath / name).is_file():
            raise pytest.UsageError(
                f'tests/conftest.py: LONG_FILES names {name}, which does '
                f'not exist')
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(
        item.nodeid.split('::')[0], len(LONG_FILES)))


def _xdist_controller(config) -> bool:
    """Whether this process is pytest-xdist's controller, which hands the
    tests out to the workers (``-n N``) and runs none itself."""
    return bool(getattr(config.option, 'numprocesses', None)) and \
        not hasattr(config, 'workerinput')


def pytest_configure(config):
    # The controller imports neither torch nor mmseg: the workers start
    # once it has read this file, and each imports them itself.
    if _xdist_controller(config):
        return
    worker = bool(os.environ.get('PYTEST_XDIST_WORKER'))
    if worker:
        threads = _worker_threads()
        os.environ.setdefault('OMP_NUM_THREADS', str(threads))
    import torch

    import lma_mmseg  # noqa: F401  (registers the components)
    if worker:
        torch.set_num_threads(threads)


@pytest.fixture(scope='session', autouse=True)
def unformatted_config_text():
    """Configs made in a test process are not yapf-formatted, and mmseg's
    config index is read once (:mod:`helpers.config_text`)..."""
    from helpers.config_text import cached_config_index, unformatted_configs
    with unformatted_configs(), cached_config_index():
        yield


@pytest.fixture(autouse=True)
def formatted_config_text(request):
    """...except in the tests marked ``formatted_configs``."""
    if not request.node.get_closest_marker('formatted_configs'):
        yield
        return
    from helpers.config_text import formatted_configs
    with formatted_configs():
        yield


@pytest.fixture(autouse=True)
def mmseg_scope():
    """Build with mmseg's registries, as configs with
    ``default_scope='mmseg'`` do."""
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')


def _freeze_live_objects():
    """Move every live object out of the cyclic garbage collector's sight
    (:func:`gc.freeze`): the modules, registries and session fixtures a
    test process holds (over 300,000 objects once torch and mmseg are
    imported) are traversed by every full collection otherwise, and those
    took a sixth of the CPU time of the in-process tests (9.3 of 55 s for
    the config, dataset and op tests; 1.2 s frozen). Only what is alive
    after a collection is frozen, so nothing that is garbage now is kept."""
    import gc
    gc.collect()
    gc.freeze()


def pytest_collection_finish(session):
    if not _xdist_controller(session.config):
        _freeze_live_objects()


@pytest.fixture(scope='module', autouse=True)
def fresh_dynamo_per_module():
    """Each test file starts with dynamo's caches empty, as it would alone:
    the graphs a file compiled (and the guards on their code objects, such
    as a model's ``step``) are dropped when it ends, so that a later file's
    ``torch.compile`` of the same code does not check them first (the
    compiled benchmark test took 14 s instead of 7 s after
    tests/apis/test_compile.py in one worker). What the file imported and
    the session's fixtures are then frozen too."""
    yield
    import sys
    dynamo = sys.modules.get('torch._dynamo')
    if dynamo is not None:
        dynamo.reset()
    _freeze_live_objects()
