"""The suite's cuts of mmengine's config costs (helpers.config_text): the
same configs, answers and errors as mmengine's own handling."""
import os.path as osp

import mmengine.config.utils as config_utils
import mmseg
import pytest
from mmengine.config import Config

from helpers import ROOT
from helpers.config_text import (cached_config_index, config_index,
                                 formatted_configs)

MMSEG = osp.dirname(mmseg.__file__)
LMA_PSPNET = osp.join(ROOT, 'configs', 'lma',
                      'lma-pspnet_r50-d8_4xb2-80k_cityscapes-seq-512x1024.py')


def _mmengines_own():
    """mmengine's ``_get_cfg_metainfo``, under the suite's cache."""
    return config_utils._get_cfg_metainfo.__wrapped__


@pytest.mark.parametrize('name', [
    'pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py',
    'erfnet/erfnet_fcn_4xb4-160k_cityscapes-512x1024.py',
    'segformer/segformer_mit-b1_8xb2-160k_ade20k-512x512.py',
])
def test_cached_index_answers_as_mmengine(name):
    cached = config_utils._get_cfg_metainfo(MMSEG, name)
    assert _mmengines_own()(MMSEG, name) == cached
    assert cached['Config'] == f'configs/{name}'


@pytest.mark.parametrize('name', [
    'no_such_config.py',
    # how mmengine asks for a base config (no '.py'): not in the index,
    # and mmengine then takes the file under the package's configs/
    'pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024',
])
def test_configs_not_in_the_index_are_refused_as_mmengine_does(name):
    for lookup in (config_utils._get_cfg_metainfo, _mmengines_own()):
        with pytest.raises(ValueError, match=f'but got {name}$'):
            lookup(MMSEG, name)


def test_index_is_read_once_per_package(monkeypatch):
    import helpers.config_text as config_text
    reads = []

    def counted(path):
        reads.append(path)
        return config_index(path)

    monkeypatch.setattr(config_text, 'config_index', counted)
    with cached_config_index():
        for _ in range(3):
            Config.fromfile(LMA_PSPNET)
    assert reads == [MMSEG]


def test_configs_load_the_same_with_mmengines_own_handling(monkeypatch):
    cached = Config.fromfile(LMA_PSPNET)
    monkeypatch.setattr(config_utils, '_get_cfg_metainfo', _mmengines_own())
    with formatted_configs():
        own = Config.fromfile(LMA_PSPNET)
    assert cached.to_dict() == own.to_dict()
    assert not cached._format_python_code and own._format_python_code
    assert cached.pretty_text != own.pretty_text
    # the two texts are the same config
    assert Config.fromstring(cached.pretty_text, '.py').to_dict() == \
        Config.fromstring(own.pretty_text, '.py').to_dict()
