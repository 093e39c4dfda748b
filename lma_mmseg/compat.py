"""Version shims, applied once when :mod:`lma_mmseg` is imported.

torch >= 2.6 loads checkpoints with ``weights_only=True``. The checkpoints that
mmengine's Runner saves carry, besides tensors, the message hub's
:class:`~mmengine.logging.HistoryBuffer` objects, whose state holds numpy
arrays and scalars, and references to the buffer's statistics methods
(pickled as ``getattr(HistoryBuffer, 'mean')``). The weights-only unpickler
refuses all of these, so ``load_checkpoint`` and ``Runner.resume`` fail on
checkpoints the Runner itself wrote.

:func:`allow_mmengine_checkpoints` allow-lists exactly those globals and
nothing else: ``weights_only`` stays on, and a checkpoint holding any other
pickled object is still refused. ``getattr`` in particular is not allowed as
such; the name resolves to :func:`_history_buffer_getattr`, which only looks
up HistoryBuffer's statistics methods.

mmengine resolves a config's base in another package (``_base_ =
['mmseg::pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py']``) by reading
that package's model index and every metafile the index lists (106 YAML files
for mmseg 1.2.2) for each such base of each config it loads: 0.4-0.8 s a time
on a 2-core machine, most of the time to load an LMA config built on an mmseg
one. :func:`cache_external_config_index` reads the index once per package
and process (an installed package's metafiles do not change while it runs).
"""
import os.path as osp
import pickle
import warnings

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.utils import digit_version

# The statistics methods HistoryBuffer always has; methods added with
# ``HistoryBuffer.register_statistics`` are accepted too.
_DEFAULT_STATISTICS = ('min', 'max', 'current', 'mean')

_applied = False
_config_index = {}  # package path -> {config name: its metafile entry}
_mmengine_cfg_metainfo = None  # mmengine's own, once replaced


def _history_buffer_getattr(obj, name):
    """``getattr`` restricted to ``HistoryBuffer.<statistics method>``."""
    allowed = set(_DEFAULT_STATISTICS) | set(HistoryBuffer._statistics_methods)
    if obj is HistoryBuffer and name in allowed:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'lma_mmseg.compat: refused getattr({obj!r}, {name!r}) while loading '
        'a checkpoint with weights_only=True; only HistoryBuffer statistics '
        f'methods {sorted(allowed)} are allowed.')


def _numpy_globals():
    """numpy globals of pickled numeric arrays, scalars and dtypes.

    Each is registered under the module path numpy 2 pickles it with
    (``numpy._core``) and the one numpy 1 used (``numpy.core``), so
    checkpoints written under either load.
    """
    try:
        multiarray = np._core.multiarray
    except AttributeError:  # numpy < 2
        multiarray = np.core.multiarray
    entries = [(np.ndarray, 'numpy.ndarray'), (np.dtype, 'numpy.dtype')]
    # numpy >= 1.25 builds each dtype as an instance of its own class
    # (numpy.dtypes.Float64DType, ...); the unpickler checks that class.
    # Numeric and boolean dtypes only: no object or void dtypes.
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        for code in '?bhilqBHILQefdgFDG':
            cls = type(np.dtype(code))
            entries.append((cls, f'numpy.dtypes.{cls.__name__}'))
    for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        entries.append((multiarray._reconstruct, f'{module}._reconstruct'))
        entries.append((multiarray.scalar, f'{module}.scalar'))
    return entries


def mmengine_checkpoint_globals():
    """The (object, pickled name) pairs an mmengine checkpoint needs."""
    return [
        (HistoryBuffer, 'mmengine.logging.history_buffer.HistoryBuffer'),
        (_history_buffer_getattr, 'builtins.getattr'),
    ] + _numpy_globals()


def allow_mmengine_checkpoints():
    """Allow-list mmengine's checkpoint globals for ``weights_only`` loads.

    A no-op on torch < 2.6 (which does not load weights-only by default) and
    when already applied.
    """
    global _applied
    if _applied:
        return
    if digit_version(torch.__version__) >= digit_version('2.6.0'):
        torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
    _applied = True


def _external_config_index(package_path):
    """The configs of an installed OpenMMLab package, by name (the path under
    ``configs/`` without ``.py``), with their metafile entries: the first
    entry of each config, as mmengine takes it."""
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


def _cached_cfg_metainfo(package_path, cfg_path):
    """mmengine's ``_get_cfg_metainfo``, the package's index read once."""
    if package_path not in _config_index:
        _config_index[package_path] = _external_config_index(package_path)
    index = _config_index[package_path]
    if cfg_path not in index:
        raise ValueError(f'Expected configs: {index.keys()}, but got '
                         f'{cfg_path}')
    return index[cfg_path]


def cache_external_config_index():
    """Let mmengine read the config index of a package (``mmseg::``) once
    per process. A no-op where mmengine has no ``_get_cfg_metainfo``."""
    global _mmengine_cfg_metainfo
    import mmengine.config.utils as config_utils
    original = getattr(config_utils, '_get_cfg_metainfo', None)
    if original is None or original is _cached_cfg_metainfo:
        return
    _mmengine_cfg_metainfo = original
    config_utils._get_cfg_metainfo = _cached_cfg_metainfo


allow_mmengine_checkpoints()
cache_external_config_index()
