# Copyright (c) lma_mmseg contributors. All rights reserved.
"""Dataset preparation: the synthetic video generator (:mod:`.synthetic`,
its degradations in :mod:`.degradations`) and the extraction of the
Cityscapes-sequence frames the clips need (:mod:`.cityscapes_seq`).

Nothing here is a registered component; the Dataset classes that read the
prepared trees are in :mod:`lma_mmseg.datasets`.
"""
from .degradations import (DEGRADATIONS, Degradation, get_degradation,
                           register_degradation)
from .synthetic import DemoDataSettings, SnippetRenderer, make_demo_data

__all__ = [
    'DEGRADATIONS', 'Degradation', 'get_degradation', 'register_degradation',
    'DemoDataSettings', 'SnippetRenderer', 'make_demo_data'
]
