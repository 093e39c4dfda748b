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
"""
import pickle

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.utils import digit_version

# The statistics methods HistoryBuffer always has; methods added with
# ``HistoryBuffer.register_statistics`` are accepted too.
_DEFAULT_STATISTICS = ('min', 'max', 'current', 'mean')

_applied = False


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


allow_mmengine_checkpoints()
