"""Fixtures of the API tests: the tiny LMA and single-frame segmentors of
helpers.tiny_models."""
import pytest
from mmengine.registry import init_default_scope

import lma_mmseg  # noqa: F401  (registers the components)
from helpers.tiny_models import lma_model_cfg, make_config, single_model_cfg


@pytest.fixture(autouse=True)
def mmseg_scope():
    """Build with mmseg's registries, as configs with
    ``default_scope='mmseg'`` do."""
    init_default_scope('mmseg')


@pytest.fixture
def lma_config():
    return make_config(lma_model_cfg())


@pytest.fixture
def single_config():
    return make_config(single_model_cfg())
