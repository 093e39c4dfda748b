"""Shared helpers of the test suite (importable: ``tests/`` is on
``sys.path`` through ``pythonpath`` in setup.cfg)."""
import os.path as osp

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TESTS = osp.join(ROOT, 'tests')


def python_sources(folder):
    """``(path, source)`` of every ``.py`` file below ``folder``, in a
    fixed order."""
    import os
    for parent, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.endswith('.py'):
                path = osp.join(parent, name)
                with open(path, encoding='utf-8') as f:
                    yield path, f.read()
