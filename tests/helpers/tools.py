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
import traceback

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


def run_tool_in_process(script, *args, threads=None):
    """Run ``tools/<script> args`` in this process, as ``python`` would run
    it (``__main__``, ``sys.argv``), and capture what it prints.

    For the runs whose process boundary is not what a test checks: they skip
    a fresh interpreter's start-up (several seconds of imports). Tests of
    what crosses the process boundary (exit at interpreter shutdown,
    environment variables read at import, signals, several processes, a
    fresh interpreter's imports) use :func:`run_tool`.

    As the interpreter does, an exception that leaves the script is printed
    (with its traceback) to the captured ``stderr`` and gives status 1.
    What a tool changes for the rest of its process is put back afterwards
    (see :func:`_process_state_kept`): torch's intra-op thread count (e.g.
    ``--threads``), ``os.environ`` (e.g. ``LOCAL_RANK``, set by the
    launcher arguments of ``tools/test.py``) and the working folder. The
    tool sees none of the mmengine instances made before it (loggers,
    message hubs, visualizers, default scopes: see
    :func:`_fresh_mmengine_instances`), as in a fresh interpreter.

    Args:
        script (str): Path under ``tools/``.
        *args: Command-line arguments (converted to ``str``).
        threads (int, optional): torch's intra-op threads during the run
            (what ``OMP_NUM_THREADS`` in :func:`run_tool`'s ``env`` sets for
            a process); this process's count when None.

    Returns:
        subprocess.CompletedProcess: ``returncode`` (the ``SystemExit`` code,
        0 when the script returns, 1 for an uncaught exception), ``stdout``
        and ``stderr`` as text.
    """
    path = osp.join(ROOT, 'tools', script)
    argv = [path] + [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    saved_argv, code = sys.argv, 0
    sys.argv = argv
    try:
        with _process_state_kept(), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err), \
                _log_handlers_to(out, err), _fresh_mmengine_instances():
            if threads is not None:
                import torch
                torch.set_num_threads(threads)
            try:
                runpy.run_path(path, run_name='__main__')
            except SystemExit as exc:
                if exc.code is None or isinstance(exc.code, int):
                    code = exc.code or 0
                else:  # sys.exit('message'): printed, status 1
                    print(exc.code, file=sys.stderr)
                    code = 1
            except Exception:  # uncaught: traceback on stderr, status 1
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved_argv
    return subprocess.CompletedProcess(argv, code, out.getvalue(),
                                       err.getvalue())


@contextlib.contextmanager
def _process_state_kept():
    """Put back, after the block, the state of this process that a tool run
    in it may change for the tests after it: torch's intra-op thread count,
    ``os.environ`` (variables added, changed or removed) and the working
    folder."""
    import torch
    threads = torch.get_num_threads()
    environ = dict(os.environ)
    cwd = os.getcwd()
    try:
        yield
    finally:
        os.chdir(cwd)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        for key in set(os.environ) - set(environ):
            del os.environ[key]
        for key, value in environ.items():
            if os.environ.get(key) != value:
                os.environ[key] = value


@contextlib.contextmanager
def _fresh_mmengine_instances():
    """Hide, for the block, the instances of mmengine's global managers
    (``MMLogger``, ``MessageHub``, ``DefaultScope``, ``Visualizer`` and its
    subclasses) made before it, and drop those made in it afterwards: a
    tool run in this process builds its own, as in a fresh interpreter
    (e.g. a runner's ``Visualizer`` named ``'visualizer'`` would otherwise
    be an earlier run's, writing into that run's folder)."""
    from mmengine.logging import MessageHub, MMLogger
    from mmengine.registry import DefaultScope
    from mmengine.visualization import Visualizer

    def with_subclasses(cls):
        found, todo = [], [cls]
        while todo:
            c = todo.pop()
            found.append(c)
            todo.extend(c.__subclasses__())
        return found

    classes = [MMLogger, MessageHub, DefaultScope] + with_subclasses(
        Visualizer)
    saved = {cls: cls.__dict__.get('_instance_dict') for cls in classes}
    for cls in classes:
        if saved[cls] is not None:
            cls._instance_dict = type(saved[cls])()
    try:
        yield
    finally:
        for cls, instances in saved.items():
            if instances is not None:
                cls._instance_dict = instances


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
