"""lma_mmseg: Local Memory Attention for video semantic segmentation.

Importing the package applies the version shims of :mod:`lma_mmseg.compat`
once and registers every component into MMSegmentation's registries
(``MODELS``, ``DATASETS``, ``TRANSFORMS``, ``METRICS``), so configs only need
``custom_imports = dict(imports=['lma_mmseg'], allow_failed_imports=False)``.
"""
from . import compat  # noqa: F401  (must run before any checkpoint loads)
from . import datasets, evaluation, models, ops  # noqa: F401  (registers)
from . import engine  # noqa: F401  (checkpoint hook, model wrapper)
from .version import __version__, version_info

__all__ = ['__version__', 'version_info']
