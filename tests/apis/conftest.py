"""Fixtures of the API tests: the tiny LMA and single-frame segmentors of
helpers.tiny_models."""
import pytest

import lma_mmseg  # noqa: F401  (registers the components)
from helpers.tiny_models import lma_model_cfg, make_config, single_model_cfg


@pytest.fixture
def lma_config():
    return make_config(lma_model_cfg())


@pytest.fixture
def single_config():
    return make_config(single_model_cfg())
