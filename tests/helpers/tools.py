"""Run a command-line script of ``tools/``: as a subprocess, or in this
process where the process boundary is not what a test checks."""
import contextlib
import io
import logging
import os
import os.path as osp
import runpy
import subprocess
import sys

from . import ROOT, TESTS


def tool_env(**extra) -> dict:
    """The environment of a tool run: this one, with the checkout and
    ``tests/`` (for ``helpers``) first on ``PYTHONPATH``."""
    path = [ROOT, TESTS]
    if os.environ.get('PYTHONPATH'):
        path.append(os.environ['PYTHONPATH'])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path), **extra)


def tool_command(script, *args):
    """The command line of ``tools/<script> args`` (``.py`` with this
    interpreter, ``.sh`` with bash)."""
    path = osp.join(ROOT, 'tools', script)
    runner = ['bash'] if script.endswith('.sh') else [sys.executable]
    return runner + [path] + [str(a) for a in args]


def run_tool(script, *args, env=None, timeout=600, check=False, cwd=ROOT):
    """Run ``tools/<script>`` with ``args`` and wait for it.

    Args:
        script (str): Path under ``tools/``, e.g. ``'test.py'`` or
            ``'convert/mmseg_erfnet_to_split.py'``.
        *args: Command-line arguments (converted to ``str``).
        env (dict, optional): Extra environment variables.
        timeout (float): Seconds before the run is killed.
        check (bool): Fail with the tool's output when it exits non-zero.
        cwd (str): Working folder (default: the repository root).

    Returns:
        subprocess.CompletedProcess: With ``stdout`` and ``stderr`` as text.
    """
    proc = subprocess.run(
        tool_command(script, *args),
        cwd=cwd,
        env=tool_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f'tools/{script} exited with {proc.returncode}:\n'
            f'{(proc.stdout + proc.stderr)[-5000:]}')
    return proc


def run_tool_in_process(script, *args):
    """Run ``tools/<script> args`` in this process, as ``python`` would run
    it (``__main__``, ``sys.argv``), and capture what it prints.

    For the checks of a tool's arguments and bad input, which fail before any
    heavy work: they skip a fresh interpreter's start-up (several seconds of
    imports). Tests of what crosses the process boundary (exit at
    interpreter shutdown, environment variables read at import, signals,
    several processes) use :func:`run_tool`.

    Returns:
        subprocess.CompletedProcess: ``returncode`` (the ``SystemExit`` code,
        0 when the script returns), ``stdout`` and ``stderr`` as text.
    """
    path = osp.join(ROOT, 'tools', script)
    argv = [path] + [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    saved_argv, code = sys.argv, 0
    sys.argv = argv
    try:
        with contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err), _log_handlers_to(out, err):
            try:
                runpy.run_path(path, run_name='__main__')
            except SystemExit as exc:
                if exc.code is None or isinstance(exc.code, int):
                    code = exc.code or 0
                else:  # sys.exit('message'): printed, status 1
                    print(exc.code, file=sys.stderr)
                    code = 1
    finally:
        sys.argv = saved_argv
    return subprocess.CompletedProcess(argv, code, out.getvalue(),
                                       err.getvalue())


@contextlib.contextmanager
def _log_handlers_to(out, err):
    """Point the console handlers of the loggers made before the tool ran
    at ``out`` / ``err`` for the block: mmengine's loggers (whose console
    handler writes to the ``sys.stdout`` of the moment it was made) and the
    handlers of other loggers that write to this process's stdout or
    stderr."""
    from mmengine.logging import MMLogger  # made outside logging's manager
    targets = {}
    for stream, buffer in ((sys.stdout, out), (sys.__stdout__, out),
                           (sys.stderr, err), (sys.__stderr__, err)):
        targets.setdefault(id(stream), buffer)
    handlers = {}
    for logger in MMLogger._instance_dict.values():
        for handler in logger.handlers:
            if type(handler) is logging.StreamHandler:
                handlers[handler] = out
    others = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    for logger in others:
        for handler in logger.handlers:
            if type(handler) is logging.StreamHandler and id(
                    handler.stream) in targets:
                handlers.setdefault(handler, targets[id(handler.stream)])
    saved = [(handler, handler.stream) for handler in handlers]
    for handler, buffer in handlers.items():
        handler.stream = buffer
    try:
        yield
    finally:
        for handler, stream in saved:
            handler.stream = stream
