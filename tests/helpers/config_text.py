"""Config texts without yapf formatting, in the test processes.

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
"""
import contextlib
import functools


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
