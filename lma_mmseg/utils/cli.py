# Copyright (c) lma_mmseg contributors. All rights reserved.
"""The error contract of the command lines in ``tools/``.

Bad input (a missing or malformed file, a refused archive, a bad argument)
and an output folder that cannot be written (a file, read-only, full) end a
tool with ONE line ``<tool>: error: <message>`` on stderr and exit status 2,
as ``argparse`` does for bad arguments; ``--debug`` shows the traceback
instead. Anything else is a bug and keeps its traceback.

A tool's ``__main__`` block is::

    sys.exit(run_main(main, prog='tool.py'))

with ``main(argv)`` parsing its arguments (``add_debug_argument(parser)``)
and calling the package.
"""
import argparse
import os.path as osp
import pickle
import sys
from typing import Callable, Optional, Sequence, Tuple, Type

from ..fileio import FolderLockedError

#: Errors that mean bad input or an unwritable (or busy) output, not a bug.
INPUT_ERRORS: Tuple[Type[BaseException], ...] = (
    OSError, ValueError, pickle.UnpicklingError, FolderLockedError)


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--debug``: show the traceback of an error instead of the
    one-line message."""
    parser.add_argument(
        '--debug',
        action='store_true',
        help='on an error, show the traceback instead of one line')


def error_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (its lines joined by blanks)."""
    text = str(exc)
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = str(exc.args[0])
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return ' '.join(lines) or type(exc).__name__


def run_main(
    main: Callable[[Optional[Sequence[str]]], object],
    argv: Optional[Sequence[str]] = None,
    prog: Optional[str] = None,
    errors: Tuple[Type[BaseException], ...] = ()
) -> int:
    """Run a tool's ``main(argv)`` under the error contract above.

    Args:
        main (callable): Parses ``argv`` and does the work; an ``int`` it
            returns is the exit status, anything else means 0.
        argv (Sequence[str], optional): Arguments (default ``sys.argv[1:]``).
        prog (str, optional): The tool's name in messages (default: the
            script's file name).
        errors (tuple[type]): Further error classes of bad input, besides
            :data:`INPUT_ERRORS`.

    Returns:
        int: The exit status: ``main``'s, or 2 after a bad-input error.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or osp.basename(sys.argv[0])
    try:
        status = main(argv)
    except INPUT_ERRORS + tuple(errors) as exc:
        if '--debug' in argv:
            raise
        print(f'{prog}: error: {error_line(exc)}', file=sys.stderr)
        return 2
    return status if isinstance(status, int) and \
        not isinstance(status, bool) else 0
