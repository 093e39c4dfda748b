"""Atomic file writes: a reader sees the old file or the new one, never half.

Every writer of the package goes through this module, with one scheme:

1. the content goes to a temporary file in the destination's own folder
   (same file system, so the rename below is atomic), named
   ``.<name>.<random>.tmp<ext>``: it starts with ``.`` so that globs such as
   ``*.png`` (or the Cityscapes scripts' prediction search) never pick it
   up, and it keeps the destination's extension ``<ext>`` for writers that
   choose the format by extension (``cv2.VideoWriter``, ``np.save``);
2. the temporary file is flushed and ``fsync``-ed;
3. :func:`os.replace` moves it over the destination;
4. the folder is ``fsync``-ed, so the rename itself is on disk.

If anything fails before step 3 the temporary file is removed and the error
propagates, so the destination either keeps its previous content or does
not exist; an ``OSError`` of the writing (a full disk, a read-only folder)
names the destination. A temporary file that vanished before step 3 (another
process removed it) is an error too, never a silently missing file. Only a
process killed between steps 1 and 3 leaves a temporary file behind;
:func:`stale_temp_files` finds such leftovers and
:func:`remove_stale_temp_files` deletes them.

:func:`output_folder` checks up front that a tool can write into its output
folder, and :func:`folder_lock` keeps a second process from writing into a
folder that one is filling.

All functions take the destination path first.
"""
import contextlib
import errno
import glob
import io
import json
import os
import os.path as osp
import re
import socket
import tempfile
import time
import zipfile
from typing import IO, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np

PathLike = Union[str, os.PathLike]
TEMP_MARK = '.tmp'
_TEMP_RE = re.compile(r'^\..+\.[^.]+' + re.escape(TEMP_MARK) + r'(\.[^.]*)?$')

__all__ = [
    'AtomicTarget', 'atomic_path', 'atomic_writer', 'atomic_write_bytes',
    'atomic_write_text', 'atomic_write_json', 'atomic_write_png',
    'atomic_write_zip', 'is_temp_file', 'stale_temp_files',
    'remove_stale_temp_files', 'output_folder', 'FolderLockedError',
    'folder_lock'
]


def _fsync_dir(folder: str) -> None:
    """Persist a folder's entries (a rename); a no-op where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: str) -> None:
    with open(path, 'rb') as f:
        os.fsync(f.fileno())


def _default_mode() -> int:
    """The permissions ``open()`` gives a new file (0666 minus the umask);
    ``mkstemp`` would give 0600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _naming(exc: OSError, path: str, tmp: Optional[str] = None) -> OSError:
    """An error of writing ``path`` (through ``tmp``) as one of the same
    class that names ``path``, e.g. ``[Errno 28] cannot write /out/x.png: No
    space left on device``. Errors about other files (a source that cannot
    be read) are returned unchanged."""
    if exc.errno is None or exc.filename not in (None, path, tmp):
        return exc
    try:
        return type(exc)(
            exc.errno, f'cannot write {path}: {exc.strerror or exc}')
    except Exception:  # a subclass with another constructor
        return exc


class AtomicTarget:
    """One atomic write through a temporary file: the object behind
    :func:`atomic_path`, for writers that finish in another place than they
    start (e.g. a video writer closed after its last frame).

    Args:
        path (str | PathLike): Destination. Its folder is created if missing.

    Attributes:
        path (str): The destination (absolute).
        tmp (str): The temporary file next to it (exists, empty, at first).
    """

    def __init__(self, path: PathLike):
        self.path = osp.abspath(os.fspath(path))
        folder, name = osp.split(self.path)
        try:
            os.makedirs(folder, exist_ok=True)
            fd, self.tmp = tempfile.mkstemp(
                dir=folder,
                prefix=f'.{name}.',
                suffix=TEMP_MARK + osp.splitext(name)[1])
        except OSError as exc:
            raise _naming(exc, self.path, exc.filename) from exc
        try:
            os.fchmod(fd, _default_mode())
        finally:
            os.close(fd)
        self._done = False

    def commit(self) -> str:
        """Sync the temporary file and rename it to :attr:`path`.

        Raises:
            FileNotFoundError: The temporary file is gone (another process
                removed it): the destination was not written.
            OSError: Syncing or renaming failed (named after the
                destination); the temporary file is removed.
        """
        if self._done:
            raise RuntimeError(
                f'the atomic write of {self.path} is already '
                'finished')
        self._done = True
        if not osp.exists(self.tmp):
            raise self.vanished()
        try:
            _fsync_file(self.tmp)
            os.replace(self.tmp, self.path)
        except FileNotFoundError as exc:
            raise self.vanished() from exc
        except OSError as exc:
            self._remove_tmp()
            raise _naming(exc, self.path, self.tmp) from exc
        except BaseException:  # interrupted (KeyboardInterrupt, ...)
            self._remove_tmp()
            raise
        _fsync_dir(osp.dirname(self.path))
        return self.path

    def vanished(self) -> FileNotFoundError:
        """The error of a temporary file that is gone (removed by another
        process): it names the destination, which was not written."""
        return FileNotFoundError(
            errno.ENOENT,
            f'cannot write {self.path}: its temporary file {self.tmp} '
            'vanished before it was renamed (did another process remove '
            'it?); the file was not written')

    def discard(self) -> None:
        """Remove the temporary file; :attr:`path` keeps what it had."""
        self._done = True
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.tmp)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[str]:
    """A temporary path next to ``path``, moved to ``path`` on success.

    For writers that want a file name rather than a file object (e.g.
    ``cv2.VideoWriter``, ``cv2.imwrite``, ``np.save``). The temporary name
    keeps the extension of ``path``.

    Args:
        path (str | PathLike): Destination. Its folder is created if missing.

    Yields:
        str: The temporary file's path (the file exists, empty). On a normal
        exit of the ``with`` block the file is synced and renamed to
        ``path``; on an exception it is removed and the exception propagates
        (an ``OSError`` renamed to name ``path``). A temporary file that is
        gone at the end of the block raises ``FileNotFoundError``: use
        :class:`AtomicTarget` and its ``discard`` to give up a write.
    """
    target = AtomicTarget(path)
    try:
        yield target.tmp
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) and \
                not osp.exists(target.tmp):
            raise target.vanished() from exc
        target.discard()
        named = _naming(exc, target.path, target.tmp)
        if named is exc:
            raise
        raise named from exc
    except BaseException:
        target.discard()
        raise
    target.commit()


@contextlib.contextmanager
def atomic_writer(path: PathLike,
                  mode: str = 'wb',
                  encoding: str = 'utf-8') -> Iterator[IO]:
    """Open a temporary file next to ``path``; move it to ``path`` on success.

    Args:
        path (str | PathLike): Destination. Its folder is created if missing.
        mode (str): ``'wb'`` (bytes) or ``'w'`` (text, no newline
            translation).
        encoding (str): Encoding of text mode.

    Yields:
        file object: The open temporary file. On a normal exit of the
        ``with`` block it is flushed, synced and renamed to ``path``; on an
        exception it is removed and the exception propagates.
    """
    if mode not in ('wb', 'w'):
        raise ValueError(
            f'atomic_writer({os.fspath(path)!r}): mode must be "wb" or "w", '
            f'got {mode!r}')
    kwargs = {} if mode == 'wb' else dict(encoding=encoding, newline='')
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()


def atomic_write_bytes(path: PathLike, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically.

    Args:
        path (str | PathLike): Destination.
        data (bytes | bytearray | memoryview): The content.

    Returns:
        str: ``path``.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(
            f'atomic_write_bytes({os.fspath(path)!r}, data): data must be '
            f'bytes, got {type(data).__name__}')
    with atomic_writer(path, 'wb') as f:
        f.write(data)
    return os.fspath(path)


def atomic_write_text(
        path: PathLike, text: str, encoding: str = 'utf-8') -> str:
    """Write ``text`` to ``path`` atomically (no newline translation).

    Returns:
        str: ``path``.
    """
    if not isinstance(text, str):
        raise TypeError(
            f'atomic_write_text({os.fspath(path)!r}, text): text must be '
            f'str, got {type(text).__name__}')
    with atomic_writer(path, 'w', encoding=encoding) as f:
        f.write(text)
    return os.fspath(path)


def _to_builtin(obj):
    """json.dump ``default`` hook for numpy/torch scalars and arrays."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, 'tolist'):  # torch tensors
        return obj.tolist()
    raise TypeError(f'{type(obj).__name__} is not JSON serializable')


def atomic_write_json(path: PathLike, obj, indent: int = 2) -> str:
    """Dump ``obj`` as JSON (numpy values allowed; NaN kept as ``NaN``)."""
    text = json.dumps(obj, indent=indent, default=_to_builtin)
    return atomic_write_text(path, text + '\n')


def atomic_write_png(path: PathLike, array: np.ndarray) -> str:
    """Encode a 2-D uint8 label map as a grayscale PNG and write it atomically.

    Args:
        path (str | PathLike): Destination ``.png`` file.
        array (np.ndarray): (H, W) array with values in [0, 255].
    """
    from PIL import Image
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(
            f'atomic_write_png({os.fspath(path)!r}): expected a '
            f'(H, W) label map, got shape {tuple(array.shape)}')
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(
            f'atomic_write_png({os.fspath(path)!r}): values must '
            f'lie in [0, 255], got [{array.min()}, '
            f'{array.max()}]')
    buf = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))
    image.save(buf, format='PNG')
    return atomic_write_bytes(path, buf.getvalue())


def atomic_write_zip(
        path: PathLike, members: Iterable[Tuple[str, Union[str,
                                                           bytes]]]) -> str:
    """Write a zip archive atomically.

    Args:
        path (str | PathLike): Destination ``.zip`` file.
        members (iterable[tuple[str, str | bytes]]): ``(arcname, source)``
            pairs; ``source`` is a file path or the file's bytes.

    Returns:
        str: ``path``.
    """
    with atomic_writer(path, 'wb') as f:
        with zipfile.ZipFile(f, 'w', compression=zipfile.ZIP_DEFLATED) as zf:
            seen = set()
            for arcname, source in members:
                if arcname in seen:
                    raise ValueError(
                        f'atomic_write_zip({os.fspath(path)!r}): duplicate '
                        f'archive member {arcname!r}')
                seen.add(arcname)
                if isinstance(source, bytes):
                    zf.writestr(arcname, source)
                else:
                    zf.write(source, arcname)
    return os.fspath(path)


def is_temp_file(name: PathLike) -> bool:
    """Whether ``name`` (a path or a file name) is a temporary file of this
    module's writers."""
    return bool(_TEMP_RE.match(osp.basename(os.fspath(name))))


def stale_temp_files(folder: PathLike) -> List[str]:
    """Temporary files left in ``folder`` by interrupted atomic writes."""
    pattern = osp.join(glob.escape(os.fspath(folder)), '.*' + TEMP_MARK + '*')
    return sorted(p for p in glob.glob(pattern) if is_temp_file(p))


def remove_stale_temp_files(folder: PathLike) -> List[str]:
    """Remove the leftovers of interrupted atomic writes in ``folder``.

    Only call this while no other process writes into ``folder``.

    Returns:
        list[str]: The removed paths.
    """
    removed = []
    for path in stale_temp_files(folder):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            removed.append(path)
    return removed


def output_folder(path: PathLike, what: str = 'output folder') -> str:
    """Create ``path`` if needed and check that files can be written in it,
    before any work whose results would go there.

    Args:
        path (str | PathLike): The folder.
        what (str): How messages name it, e.g. ``'--out'``.

    Returns:
        str: ``path``.

    Raises:
        NotADirectoryError: ``path`` (or a folder above it) is a file.
        OSError: The folder cannot be created or written (read-only, no
            permission, full); the message names it.
    """
    path = os.fspath(path)
    if osp.exists(path) and not osp.isdir(path):
        raise NotADirectoryError(
            errno.ENOTDIR, f'{what} {path!r} is a file, not a folder')
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(
            dir=path, prefix='.write-probe.', suffix=TEMP_MARK)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise type(exc)(
            exc.errno, f'{what} {path!r} cannot be written: '
            f'{exc.strerror or exc}') from exc
    return path


class FolderLockedError(RuntimeError):
    """Another process holds the lock of a folder (see :func:`folder_lock`).

    Attributes:
        lock_file (str): The lock file.
        holder (dict): What the holder wrote into it (``pid``, ``host``,
            ``since``, ``command``).
    """

    def __init__(self, lock_file: str, holder: dict):
        self.lock_file = lock_file
        self.holder = holder
        since = holder.get('since')
        when = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since)) \
            if isinstance(since, (int, float)) else 'an unknown time'
        super().__init__(
            f'{osp.dirname(lock_file)} is being written by another run: '
            f'process {holder.get("pid", "?")} on host '
            f'{holder.get("host", "?")} ({holder.get("command") or "?"}) '
            f'holds {lock_file} since {when}; wait for it to finish')


def _read_holder(lock_file: str) -> dict:
    try:
        with open(lock_file, encoding='utf-8') as f:
            holder = json.load(f)
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def folder_lock(
        folder: PathLike,
        name: str = '.lock',
        command: Optional[str] = None) -> Iterator[str]:
    """Hold an exclusive lock on ``folder`` while writing into it.

    The lock is an ``fcntl.flock`` on ``folder/name``, so the system
    releases it when its holder dies (no stale lock after a kill); the file
    records the holder's pid, host, start time and ``command`` for the
    message a second process gets. The file is removed on release.

    Args:
        folder (str | PathLike): The folder (created if missing).
        name (str): The lock file's name. Defaults to ``'.lock'``.
        command (str, optional): What the holder does, for the message.

    Yields:
        str: The lock file's path.

    Raises:
        FolderLockedError: Another process holds the lock; the message names
            it (pid, host, since when).
    """
    import fcntl
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    lock_file = osp.join(folder, name)
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES,
                                 errno.EWOULDBLOCK):
                raise
            raise FolderLockedError(
                lock_file, _read_holder(lock_file)) from None
        # the holder before us may have removed the file after we opened
        # it: a lock on a removed file locks nothing, start again
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock_file))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        holder = dict(
            pid=os.getpid(),
            host=socket.gethostname(),
            since=time.time(),
            command=command)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder).encode())
        yield lock_file
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_file)
        os.close(fd)
