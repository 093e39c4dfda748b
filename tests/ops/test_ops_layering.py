"""The op layer is the lowest floor of the package: nothing under
``lma_mmseg/ops/`` imports the rest of ``lma_mmseg`` (only the op's own
compiled extension ``lma_mmseg._ext``), and its entry points are plain
module-level functions."""
import ast
import inspect
import os
import os.path as osp
from typing import List, Tuple

import lma_mmseg.ops as ops
from helpers import python_sources
from lma_mmseg.ops import functional

PACKAGE = osp.dirname(osp.abspath(ops.__file__))
#: what an ops module may import from lma_mmseg outside lma_mmseg.ops
ALLOWED = ('lma_mmseg._ext', )


def _module_name(path: str) -> str:
    rel = osp.relpath(path, osp.dirname(osp.dirname(PACKAGE)))
    parts = rel[:-len('.py')].split(os.sep)
    if parts[-1] == '__init__':
        parts = parts[:-1]
    return '.'.join(parts)


def imported_modules(source: str, module: str,
                     is_package: bool = False) -> List[Tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``source``, the
    code of ``module``; ``from X import a`` counts as ``X.a`` (a submodule
    or a name of ``X``: both need ``X``)."""
    package = module if is_package else module.rpartition('.')[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                anchor = package.split('.')
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = '.'.join(anchor + ([base] if base else []))
            found += [(node.lineno, f'{base}.{alias.name}')
                      for alias in node.names]
    return found


def foreign_imports(source: str, module: str,
                    is_package: bool = False) -> List[str]:
    """Imports of ``lma_mmseg`` modules outside ``lma_mmseg.ops``."""
    bad = []
    for line, name in imported_modules(source, module, is_package):
        inside = name == 'lma_mmseg.ops' or name.startswith('lma_mmseg.ops.')
        if (name.startswith('lma_mmseg.') or name == 'lma_mmseg') \
                and not inside and name not in ALLOWED:
            bad.append(f'{module}:{line} imports {name}')
    return bad


def test_checker_sees_upward_imports():
    """The checker itself: absolute, relative and nested imports."""
    module = 'lma_mmseg.ops.some_layer'
    assert foreign_imports('from ..models import necks\n', module) == [
        f'{module}:1 imports lma_mmseg.models.necks'
    ]
    assert foreign_imports(
        'def f():\n    import lma_mmseg.evaluation.metrics\n', module) == [
            f'{module}:2 imports lma_mmseg.evaluation.metrics'
        ]
    assert foreign_imports('from lma_mmseg import apis\n', module)
    assert foreign_imports('from ... import x\n', 'lma_mmseg.ops.sub.m')
    assert not foreign_imports(
        'from . import reference\nfrom .checks import check_window\n'
        'from lma_mmseg import _ext\nfrom .. import _ext\nimport torch\n',
        module)
    assert not foreign_imports('from .functional import x\n',
                               'lma_mmseg.ops', is_package=True)


def test_ops_import_nothing_above_ops():
    bad, checked = [], 0
    for path, source in python_sources(PACKAGE):
        bad += foreign_imports(
            source, _module_name(path),
            is_package=osp.basename(path) == '__init__.py')
        checked += 1
    assert checked >= 7  # __init__, extension, checks, reference, ...
    assert not bad, '\n'.join(bad)


def test_entry_points_are_plain_functions():
    """Written out in functional.py: own names, signatures and docstrings
    (no factory builds them)."""
    for name in ('local_attention', 'local_attention_unfused',
                 'local_attention_reference', 'local_correlation',
                 'local_aggregation', 'local_correlation_reference',
                 'local_aggregation_reference'):
        fn = getattr(ops, name)
        assert fn is getattr(functional, name)
        assert fn.__qualname__ == name and fn.__module__ == functional.__name__
        assert inspect.getsourcefile(fn) == functional.__file__
        assert fn.__doc__ and 'Returns:' in fn.__doc__, name
        assert next(iter(inspect.signature(fn).parameters)) in ('q', 'attn')
