"""lma_mmseg.fileio: the one atomic writer of the package."""
import json
import os
import zipfile

import numpy as np
import pytest

from lma_mmseg.fileio import (atomic_path, atomic_write_bytes,
                              atomic_write_json, atomic_write_text,
                              atomic_write_zip, atomic_writer, is_temp_file,
                              remove_stale_temp_files, stale_temp_files)


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_path_comes_first_and_content_lands(tmp_path):
    assert atomic_write_bytes(tmp_path / 'a.bin', b'\x00\x01') == str(
        tmp_path / 'a.bin')
    assert (tmp_path / 'a.bin').read_bytes() == b'\x00\x01'
    atomic_write_text(tmp_path / 'b.txt', 'caf\u00e9\r\n')
    assert (tmp_path / 'b.txt').read_bytes() == 'caf\u00e9\r\n'.encode()
    atomic_write_text(tmp_path / 'c.txt', 'x', encoding='utf-16')
    assert (tmp_path / 'c.txt').read_text(encoding='utf-16') == 'x'
    atomic_write_json(tmp_path / 'd.json', dict(v=np.float32(0.5)))
    assert json.loads((tmp_path / 'd.json').read_text()) == dict(v=0.5)
    assert _names(tmp_path) == ['a.bin', 'b.txt', 'c.txt', 'd.json']


def test_swapped_arguments_are_refused(tmp_path):
    """Text and path are both str: a swapped call must not write a file
    named after the content."""
    with pytest.raises(TypeError, match='must be bytes'):
        atomic_write_bytes(b'data', str(tmp_path / 'x'))
    with pytest.raises(TypeError, match='must be str'):
        atomic_write_text('x.txt', tmp_path / 'x.txt')
    assert _names(tmp_path) == []


def test_writer_error_leaves_old_file_and_no_partial(tmp_path):
    path = tmp_path / 'result.json'
    path.write_text('old')
    with pytest.raises(RuntimeError, match='boom'):
        with atomic_writer(path, 'w') as f:
            f.write('half of the new cont')
            raise RuntimeError('boom')
    assert path.read_text() == 'old'
    assert _names(tmp_path) == ['result.json']


def test_writer_error_creates_nothing(tmp_path):
    with pytest.raises(ValueError, match='duplicate'):
        atomic_write_zip(tmp_path / 'sub' / 'a.zip',
                         [('x', b'1'), ('x', b'2')])
    assert _names(tmp_path / 'sub') == []


def test_atomic_path_keeps_the_extension_and_renames(tmp_path):
    with atomic_path(tmp_path / 'arr.npy') as tmp:
        assert tmp.endswith('.npy') and os.path.dirname(tmp) == str(tmp_path)
        assert os.path.basename(tmp).startswith('.arr.npy.')
        assert is_temp_file(tmp)
        np.save(tmp, np.arange(3))  # np.save adds .npy unless present
        assert not (tmp_path / 'arr.npy').exists()
    assert np.load(tmp_path / 'arr.npy').tolist() == [0, 1, 2]
    assert _names(tmp_path) == ['arr.npy']
    with pytest.raises(KeyError):
        with atomic_path(tmp_path / 'arr.npy') as tmp:
            np.save(tmp, np.arange(5))
            raise KeyError('x')
    assert np.load(tmp_path / 'arr.npy').tolist() == [0, 1, 2]
    assert _names(tmp_path) == ['arr.npy']


def test_permissions_are_those_of_open(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    atomic_write_bytes(tmp_path / 'f', b'')
    assert ((tmp_path / 'f').stat().st_mode & 0o777) == (0o666 & ~umask)


def test_the_file_and_the_folder_are_synced(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f'/proc/self/fd/{fd}'))
        return real(fd)

    if not os.path.isdir('/proc/self/fd'):
        pytest.skip('needs /proc/self/fd')
    monkeypatch.setattr(os, 'fsync', fsync)
    atomic_write_bytes(tmp_path / 'f.bin', b'abc')
    assert len(synced) == 2
    assert is_temp_file(synced[0]) and synced[0].endswith('.tmp.bin')
    assert synced[1] == str(tmp_path)


def test_zip_members_from_bytes_and_files(tmp_path):
    src = tmp_path / 'src.txt'
    src.write_text('file')
    atomic_write_zip(tmp_path / 'a.zip', [('a.txt', b'bytes'),
                                          ('b.txt', str(src))])
    with zipfile.ZipFile(tmp_path / 'a.zip') as zf:
        assert zf.read('a.txt') == b'bytes' and zf.read('b.txt') == b'file'


def test_stale_temp_files_are_found_and_removed(tmp_path):
    for name in ('.iter_3.pth.ab12cd34.tmp.pth', '.last_checkpoint.x1y2.tmp',
                 'keep.tmp', '.hidden', 'iter_3.pth'):
        (tmp_path / name).write_bytes(b'')
    stale = [os.path.basename(p) for p in stale_temp_files(tmp_path)]
    assert stale == [
        '.iter_3.pth.ab12cd34.tmp.pth', '.last_checkpoint.x1y2.tmp'
    ]
    assert len(remove_stale_temp_files(tmp_path)) == 2
    assert _names(tmp_path) == ['.hidden', 'iter_3.pth', 'keep.tmp']


def test_bad_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match='mode'):
        with atomic_writer(tmp_path / 'x', 'a'):
            pass
