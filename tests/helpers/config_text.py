"""Two costs of mmengine's config handling that no test checks, cut in the
test processes (session fixtures of tests/conftest.py).

Config texts without yapf formatting (:func:`unformatted_configs`).

mmengine formats a config's text with yapf each time it is logged, dumped or
stored: a Runner does it three times when it starts and once per checkpoint
it saves, and each costs 0.2-1.5 s on the 2-core machine (tools/test.py's
config: 1.4 s, four times a run), a sixth of the suite's time in all. No test
reads that text's layout: the configs made in the test processes (by the
tests, their fixtures and the tools they run in their process) are made with
``format_python_code=False``, mmengine's own option, which
``Config.fromfile`` does not pass on; hence the default changed here.
Tests of the formatting itself use :func:`formatted_configs` (the
``formatted_configs`` marker, tests/conftest.py).

The config index of mmseg read once (:func:`cached_config_index`). mmengine
resolves a config's base in another package (``_base_ =
['mmseg::pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py']``) by reading
that package's model index and every metafile it lists (106 YAML files for
mmseg 1.2.2) for each such base of each config it loads: 0.4-0.8 s a time on
the 2-core machine, most of the time to load an LMA config built on an mmseg
one, and the suite loads such configs a few hundred times. An installed
package's metafiles do not change during a test run.
"""
import contextlib
import functools
import os.path as osp
import warnings


@contextlib.contextmanager
def unformatted_configs():
    """Within the block, every ``mmengine.config.Config`` is made with
    ``format_python_code=False`` (unless the caller passes it); the
    constructor is put back afterwards."""
    from mmengine.config import Config
    init = Config.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        if len(args) < 5:  # format_python_code is the fifth argument
            kwargs.setdefault('format_python_code', False)
        init(self, *args, **kwargs)

    Config.__init__ = __init__
    try:
        yield
    finally:
        Config.__init__ = init


@contextlib.contextmanager
def formatted_configs():
    """Within the block, configs are made as mmengine makes them (yapf
    formatting on), also inside :func:`unformatted_configs`."""
    from mmengine.config import Config
    current = Config.__init__
    Config.__init__ = getattr(current, '__wrapped__', current)
    try:
        yield
    finally:
        Config.__init__ = current


def config_index(package_path):
    """The configs of an installed OpenMMLab package, by name (the path under
    ``configs/``), with their metafile entries: the first entry of each
    config, as mmengine takes it."""
    from mmengine.fileio import load
    mim = osp.join(package_path, '.mim')
    index = {}
    for metafile in load(osp.join(mim, 'model-index.yml'))['Import']:
        for model in load(osp.join(mim, metafile))['Models']:
            if 'Config' not in model:
                warnings.warn(f'There is not `Config` define in {model}')
                continue
            index.setdefault(model['Config'].partition('/')[-1], model)
    return index


@contextlib.contextmanager
def cached_config_index():
    """Within the block, mmengine's ``_get_cfg_metainfo`` (one config's entry
    in a package's index) reads each package's index once; the function is
    put back afterwards."""
    import mmengine.config.utils as config_utils
    original = config_utils._get_cfg_metainfo
    indexes = {}

    @functools.wraps(original)
    def _get_cfg_metainfo(package_path, cfg_path):
        if package_path not in indexes:
            indexes[package_path] = config_index(package_path)
        index = indexes[package_path]
        if cfg_path not in index:
            raise ValueError(f'Expected configs: {index.keys()}, but got '
                             f'{cfg_path}')
        return index[cfg_path]

    config_utils._get_cfg_metainfo = _get_cfg_metainfo
    try:
        yield
    finally:
        config_utils._get_cfg_metainfo = original
