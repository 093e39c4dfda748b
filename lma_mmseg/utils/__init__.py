# Copyright (c) lma_mmseg contributors. All rights reserved.
from .cli import add_debug_argument, error_line, run_main

__all__ = ['add_debug_argument', 'error_line', 'run_main']
