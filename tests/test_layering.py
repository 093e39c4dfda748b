"""The package never reaches into the repository around it: no module of
``lma_mmseg/`` builds a path into ``tools/`` or ``configs/`` (they call the
package, not the other way round), so it works the same installed from a
wheel as in an editable checkout.

A path is what code hands to the file system or to a process: a string
that is the folder name itself (``osp.join(root, 'configs', ...)``,
``Path(root) / 'tools'``) or a relative path under one of the folders
(``'tools/train.py'``, ``'configs/demo/x.py'``). Docstrings, and messages
that merely name a script in a sentence, are no such path.
"""
import ast
import os.path as osp
import re
from typing import List

import lma_mmseg
from helpers import python_sources

PACKAGE = osp.dirname(osp.abspath(lma_mmseg.__file__))
FOLDERS = ('tools', 'configs')
# the folder itself, or a relative path under it without blanks
_PATH = re.compile(r'(\./)?(%s)(/[^\s]*)?' % '|'.join(FOLDERS))


def _docstrings(tree: ast.AST) -> set:
    """ids of the docstring constants of a module and its classes and
    functions."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                             ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr)
                    and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                ids.add(id(first.value))
    return ids


def repository_paths(source: str, filename: str = '<source>') -> List[str]:
    """``file:line: 'string'`` for every string in ``source`` that is a
    path into ``tools/`` or ``configs/``."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    # the literal parts of f-strings are checked on their own: a path that
    # continues with a formatted value still starts like one
    found = sorted(
        (node.lineno, node.col_offset, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and id(node) not in docstrings and _PATH.fullmatch(node.value))
    return [f'{filename}:{line}: {value!r}' for line, _, value in found]


def test_checker_finds_repository_paths():
    """The checker itself, on the ways a module can reach a folder."""
    assert repository_paths(
        "ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))\n"
        "cfg = osp.join(ROOT, 'configs', 'demo', 'x.py')\n"
        "cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py')]\n"
        "p = Path(ROOT) / 'tools/benchmark.py'\n"
        "q = f'configs/{name}.py'\n"
        "r = osp.join(mmseg_dir, '.mim', 'configs', name)\n") == [
            "<source>:2: 'configs'", "<source>:3: 'tools'",
            "<source>:4: 'tools/benchmark.py'", "<source>:5: 'configs/'",
            "<source>:6: 'configs'"
        ]
    assert not repository_paths(
        '"""Trained with tools/train.py on configs/demo/x.py."""\n'
        'def f():\n'
        '    """See ``tools/test.py``."""\n'
        "    raise ValueError(f'{p!r} is not a result of tools/test.py')\n"
        "TOOLS = 'toolset'\n"
        "key = 'my_configs'\n")


def test_package_holds_no_path_into_tools_or_configs():
    found, checked = [], 0
    for path, source in python_sources(PACKAGE):
        found += repository_paths(source, osp.relpath(path, PACKAGE))
        checked += 1
    assert checked > 20
    assert not found, 'paths into tools/ or configs/:\n' + '\n'.join(found)
