"""The atomic writer as a concurrent process or a full disk meets it: a
temporary file that vanished is an error, never a silently missing file,
and every error names the destination and leaves no temporary file."""
import errno
import json
import os

import pytest

import lma_mmseg.fileio
from lma_mmseg.apis.video_io import AtomicVideoWriter
from lma_mmseg.fileio import (atomic_path, atomic_writer, folder_lock,
                              is_temp_file)


def test_vanished_temp_file_raises_and_keeps_the_old_file(tmp_path):
    dst = tmp_path / 'result.json'
    dst.write_text('old')
    with pytest.raises(FileNotFoundError) as excinfo:
        with atomic_writer(dst, 'w') as f:
            f.write('new')
            os.unlink(f.name)  # what another run's clean-up does
    msg = str(excinfo.value)
    assert f'cannot write {dst}' in msg and 'vanished' in msg
    assert dst.read_text() == 'old'
    with pytest.raises(FileNotFoundError, match='vanished'):
        with atomic_path(tmp_path / 'array.npy') as tmp:
            os.unlink(tmp)
    assert sorted(os.listdir(tmp_path)) == ['result.json']


def test_full_disk_names_the_destination_and_leaves_no_temp_file(
        tmp_path, monkeypatch):

    def no_space(path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(lma_mmseg.fileio, '_fsync_file', no_space)
    dst = tmp_path / 'labels.png'
    with pytest.raises(OSError) as excinfo:
        lma_mmseg.fileio.atomic_write_bytes(dst, b'\x89PNG')
    assert excinfo.value.errno == errno.ENOSPC
    assert str(excinfo.value) == (
        f'[Errno {errno.ENOSPC}] cannot write '
        f'{dst}: No space left on device')
    assert os.listdir(tmp_path) == []


def test_video_writer_without_frames_leaves_nothing(tmp_path):
    """The writer that gives its temporary file up on purpose
    (``AtomicTarget.discard``) is not taken for a vanished one."""
    writer = AtomicVideoWriter(str(tmp_path / 'v.mp4'), 10.0, (16, 16))
    writer.close()
    assert os.listdir(tmp_path) == []


def test_lock_of_a_killed_run_is_taken_over(tmp_path):
    """The lock file a killed run leaves holds no lock (``flock`` ends with
    its holder): the next run takes it and removes it when done."""
    lock = tmp_path / '.lock'
    lock.write_text(json.dumps(dict(pid=999999999, host='gone')))
    with folder_lock(tmp_path) as path:
        assert path == str(lock)
        assert json.loads(lock.read_text())['pid'] == os.getpid()
        assert not is_temp_file(path)
    assert not lock.exists()
