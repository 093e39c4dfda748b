"""Atomic file writes: a reader sees the old file or the new one, never half.

Data goes to a temporary file in the destination's own folder (same file
system, so the final rename is atomic), is flushed and ``fsync``-ed, then
``os.replace`` puts it in place and the folder entry is synced too. A process
killed at any point leaves the previous file intact; at worst a temporary
``.<name>.<random>.part`` file stays behind, which
:func:`remove_stale_parts` cleans up.
"""
import glob
import os
import os.path as osp
import tempfile
from typing import List, Union

PART_SUFFIX = '.part'


def _fsync_dir(dirname: str) -> None:
    """Persist a folder's entries (the rename); a no-op where unsupported."""
    try:
        fd = os.open(dirname, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(data: bytes, filepath: Union[str, os.PathLike]) -> None:
    """Write ``data`` to ``filepath`` atomically, creating its folder.

    Args:
        data (bytes): The content.
        filepath (str | PathLike): Destination; an existing file is replaced
            only once the new content is completely on disk.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(
            f'atomic_write_bytes: data for {filepath} must be '
            f'bytes, got {type(data).__name__}')
    filepath = os.fspath(filepath)
    dirname = osp.dirname(osp.abspath(filepath))
    os.makedirs(dirname, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=dirname,
        prefix='.' + osp.basename(filepath) + '.',
        suffix=PART_SUFFIX)
    try:
        # mkstemp creates 0600; give the file the mode open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filepath)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(dirname)


def atomic_write_text(
        text: str,
        filepath: Union[str, os.PathLike],
        encoding: str = 'utf-8') -> None:
    """Write ``text`` to ``filepath`` atomically (see
    :func:`atomic_write_bytes`)."""
    if not isinstance(text, str):
        raise TypeError(
            f'atomic_write_text: text for {filepath} must be '
            f'str, got {type(text).__name__}')
    atomic_write_bytes(text.encode(encoding), filepath)


def stale_parts(dirname: Union[str, os.PathLike]) -> List[str]:
    """Temporary files left in ``dirname`` by interrupted atomic writes."""
    pattern = osp.join(glob.escape(os.fspath(dirname)), '.*' + PART_SUFFIX)
    return sorted(glob.glob(pattern))


def remove_stale_parts(dirname: Union[str, os.PathLike]) -> List[str]:
    """Remove the leftovers of interrupted atomic writes in ``dirname``.

    Only call this while no other process writes into ``dirname``.

    Returns:
        list[str]: The removed paths.
    """
    removed = []
    for path in stale_parts(dirname):
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed
