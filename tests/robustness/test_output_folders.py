"""Output folders that cannot be written: a file, a read-only folder, a
full disk. Every tool ends with one line ``<tool>: error: ...`` naming the
folder (or file) and exit status 2, and leaves nothing half-written;
``--debug`` shows the traceback instead. The tools run in-process through
their real entry points."""
import errno
import os

import cv2
import numpy as np
import pytest
from hostile_inputs import files_under, load_tool, snippet_members, write_zip

import lma_mmseg.fileio
from lma_mmseg.utils import run_main

TOOLS = [
    'cityscapes_seq.py', 'export.py', 'stream_exported.py', 'infer_video.py'
]


@pytest.fixture(scope='module')
def tools():
    return {
        'cityscapes_seq.py': load_tool('dataset_converters/cityscapes_seq.py'),
        'export.py': load_tool('deploy/export.py'),
        'stream_exported.py': load_tool('deploy/stream_exported.py'),
        'infer_video.py': load_tool('infer_video.py'),
    }


def tool_args(name, tmp_path, exported, out):
    """A command line of ``name`` that is good but for ``--out``."""
    if name == 'cityscapes_seq.py':
        archive = write_zip(tmp_path / 'a.zip', snippet_members())
        return [
            archive, '--splits', 'train', '--offsets', '-1',
            '--no-label-train-ids', '--out', out
        ]
    if name == 'export.py':
        return [
            exported['config'], exported['checkpoint'], '--shape', 32, 32,
            '--out', out
        ]
    frames = tmp_path / 'frames'
    frames.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(
            str(frames / f'f{i:03d}.png'),
            rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    if name == 'stream_exported.py':
        return [exported['folder'], frames, '--out', out]
    return [
        exported['config'], exported['checkpoint'], frames, '--out', out,
        '--no-video'
    ]


def run_tool_inprocess(tools, name, args, capsys):
    module = tools[name]
    argv = [str(a) for a in args]
    if hasattr(module, 'cli'):
        status = module.cli(argv)
    else:
        status = run_main(module.main, argv, prog=name)
    _, err = capsys.readouterr()
    return status, err


def one_error_line(name, err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'{name}: error: '), err
    return lines[0]


@pytest.mark.parametrize('name', TOOLS)
def test_out_that_is_a_file(tmp_path, exported, tools, capsys, name):
    out = tmp_path / 'out'
    out.write_bytes(b'kept')
    status, err = run_tool_inprocess(
        tools, name, tool_args(name, tmp_path, exported, out), capsys)
    assert status == 2
    line = one_error_line(name, err)
    assert f"'{out}' is a file, not a folder" in line
    assert out.read_bytes() == b'kept'


@pytest.mark.parametrize('name', TOOLS)
def test_out_that_is_read_only(
        tmp_path, exported, tools, capsys, unwritable_dir, name):
    before = sorted(os.listdir(unwritable_dir))
    status, err = run_tool_inprocess(
        tools, name, tool_args(name, tmp_path, exported, unwritable_dir),
        capsys)
    assert status == 2
    line = one_error_line(name, err)
    assert f"'{unwritable_dir}' cannot be written" in line
    assert sorted(os.listdir(unwritable_dir)) == before


@pytest.mark.parametrize(
    'name', ['cityscapes_seq.py', 'stream_exported.py', 'infer_video.py'])
def test_full_disk(tmp_path, exported, tools, capsys, monkeypatch, name):
    """The disk fills up while a result is written: ENOSPC raised where
    the file system reports it (the writer's fsync)."""

    def no_space(path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(lma_mmseg.fileio, '_fsync_file', no_space)
    out = tmp_path / 'out'
    status, err = run_tool_inprocess(
        tools, name, tool_args(name, tmp_path, exported, out), capsys)
    assert status == 2
    line = one_error_line(name, err)
    assert f'cannot write {out}' in line and 'No space left on device' in line
    # nothing half-written: no temporary file, no result
    assert not out.exists() or files_under(out) == {}


def test_debug_shows_the_traceback(tmp_path, exported, tools):
    out = tmp_path / 'out'
    out.write_bytes(b'kept')
    args = tool_args('cityscapes_seq.py', tmp_path, exported, out)
    with pytest.raises(NotADirectoryError, match='is a file, not a folder'):
        tools['cityscapes_seq.py'].cli([str(a) for a in args] + ['--debug'])
