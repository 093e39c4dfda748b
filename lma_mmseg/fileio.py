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
not exist. Only a process killed between steps 1 and 3 leaves a temporary
file behind; :func:`stale_temp_files` finds such leftovers and
:func:`remove_stale_temp_files` deletes them.

All functions take the destination path first.
"""
import contextlib
import glob
import io
import json
import os
import os.path as osp
import re
import tempfile
import zipfile
from typing import IO, Iterable, Iterator, List, Tuple, Union

import numpy as np

PathLike = Union[str, os.PathLike]
TEMP_MARK = '.tmp'
_TEMP_RE = re.compile(r'^\..+\.[^.]+' + re.escape(TEMP_MARK) + r'(\.[^.]*)?$')

__all__ = [
    'atomic_path', 'atomic_writer', 'atomic_write_bytes', 'atomic_write_text',
    'atomic_write_json', 'atomic_write_png', 'atomic_write_zip',
    'is_temp_file', 'stale_temp_files', 'remove_stale_temp_files'
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
        ``path``; on an exception it is removed and the exception propagates.
        A ``with`` block that removes the temporary file itself (e.g. because
        there was nothing to write) leaves ``path`` untouched.
    """
    path = osp.abspath(os.fspath(path))
    folder, name = osp.split(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=folder,
        prefix=f'.{name}.',
        suffix=TEMP_MARK + osp.splitext(name)[1])
    try:
        os.fchmod(fd, _default_mode())
        os.close(fd)
        yield tmp
        if not osp.exists(tmp):
            return
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    _fsync_dir(folder)


@contextlib.contextmanager
def atomic_writer(path: PathLike, mode: str = 'wb',
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


def atomic_write_text(path: PathLike, text: str,
                      encoding: str = 'utf-8') -> str:
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
        raise ValueError(f'atomic_write_png({os.fspath(path)!r}): expected a '
                         f'(H, W) label map, got shape {tuple(array.shape)}')
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f'atomic_write_png({os.fspath(path)!r}): values must '
                         f'lie in [0, 255], got [{array.min()}, '
                         f'{array.max()}]')
    buf = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))
    image.save(buf, format='PNG')
    return atomic_write_bytes(path, buf.getvalue())


def atomic_write_zip(path: PathLike,
                     members: Iterable[Tuple[str, Union[str, bytes]]]) -> str:
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
