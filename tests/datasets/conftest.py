"""Shared fixtures: a tiny synthetic Cityscapes-video tree written by
lma_mmseg.datasets.prep.synthetic."""
import pytest

import lma_mmseg  # noqa: F401  (registers the components)
from lma_mmseg.datasets.prep import synthetic

TINY_SIZE = (32, 64)
TINY_COUNTS = dict(num_train=6, num_val=2, num_test=2)


@pytest.fixture(scope='session')
def demo_spec():
    """Size and snippet counts of the tiny demo tree."""
    return dict(size=TINY_SIZE, **TINY_COUNTS)


@pytest.fixture(scope='session')
def make_demo():
    """The synthetic data module."""
    return synthetic


@pytest.fixture(scope='session')
def demo_root(tmp_path_factory, make_demo):
    """A tiny demo tree, shared read-only by the tests of this folder."""
    root = str(tmp_path_factory.mktemp('demo'))
    make_demo.make_demo_data(
        root,
        make_demo.DemoDataSettings(size=TINY_SIZE, seed=0, **TINY_COUNTS))
    return root


@pytest.fixture
def demo_copy(tmp_path, demo_root):
    """A private copy of the tiny demo tree, for tests that damage it."""
    import shutil
    dst = str(tmp_path / 'demo')
    shutil.copytree(demo_root, dst)
    return dst
