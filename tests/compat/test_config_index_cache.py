"""mmengine reads an installed package's config index once per process
(:func:`lma_mmseg.compat.cache_external_config_index`): the same answers as
mmengine's own reading of the metafiles, from one read."""
import os.path as osp

import mmengine.config.utils as config_utils
import mmseg
import pytest
from mmengine.config import Config

from helpers import ROOT
from lma_mmseg import compat

MMSEG = osp.dirname(mmseg.__file__)


def test_mmengine_uses_the_cached_index():
    assert config_utils._get_cfg_metainfo is compat._cached_cfg_metainfo
    compat.cache_external_config_index()  # applied once
    assert compat._mmengine_cfg_metainfo is not compat._cached_cfg_metainfo


@pytest.mark.parametrize('name', [
    'pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py',
    'erfnet/erfnet_fcn_4xb4-160k_cityscapes-512x1024.py',
    'segformer/segformer_mit-b1_8xb2-160k_ade20k-512x512.py',
])
def test_same_entries_as_mmengines_reading(name, monkeypatch):
    compat._config_index.clear()
    cached = compat._cached_cfg_metainfo(MMSEG, name)
    assert compat._mmengine_cfg_metainfo(MMSEG, name) == cached
    assert cached['Config'] == f'configs/{name}'
    # one read of the index for every later config of the package
    reads = []
    monkeypatch.setattr(compat, '_external_config_index',
                        lambda path: reads.append(path) or {})
    compat._cached_cfg_metainfo(
        MMSEG, 'pspnet/pspnet_r101-d8_4xb2-80k_cityscapes-512x1024.py')
    assert reads == []


@pytest.mark.parametrize('name', [
    'no_such_config.py',
    # how mmengine asks for a base config (no '.py'): not in the index,
    # and mmengine then takes the file under the package's configs/
    'pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024',
])
def test_configs_not_in_the_index_are_refused_as_mmengine_does(name):
    for lookup in (compat._cached_cfg_metainfo,
                   compat._mmengine_cfg_metainfo):
        with pytest.raises(ValueError, match=f'but got {name}$'):
            lookup(MMSEG, name)


def test_lma_config_on_an_mmseg_base_loads():
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs', 'lma',
                 'lma-pspnet_r50-d8_4xb2-80k_cityscapes-seq-512x1024.py'))
    assert cfg.model.backbone.type == 'ResNetV1c'
    assert cfg.model.neck.type == 'LocalMemoryNeck'
