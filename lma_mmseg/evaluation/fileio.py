"""Atomic writers for result files (PNG, JSON, CSV, zip).

Every writer first writes a temporary file in the destination folder, flushes
and ``fsync``-s it, then moves it over the final name with :func:`os.replace`
(atomic on POSIX within one file system). If anything fails before the move,
the temporary file is removed, so the final name either holds a complete file
or does not exist. Temporary names start with ``.`` and end with ``.tmp`` so
that globs such as ``*.png`` or the Cityscapes scripts' prediction search never
pick one up, even after a hard kill.
"""
import contextlib
import io
import json
import os
import os.path as osp
import tempfile
import zipfile
from typing import Iterable, Iterator, Tuple, Union

import numpy as np
from PIL import Image

__all__ = [
    'atomic_open', 'atomic_write_bytes', 'atomic_write_png',
    'atomic_write_json', 'atomic_write_text', 'atomic_write_zip'
]


@contextlib.contextmanager
def atomic_open(path: str, mode: str = 'wb') -> Iterator[io.IOBase]:
    """Open a temporary file next to ``path``; move it to ``path`` on success.

    Args:
        path (str): Final file name. Its folder is created if missing.
        mode (str): ``'wb'`` or ``'w'`` (text, UTF-8).

    Yields:
        file object: The open temporary file. On a normal exit of the
        ``with`` block it is flushed, synced and renamed to ``path``; on an
        exception it is deleted and the exception propagates.
    """
    if mode not in ('wb', 'w'):
        raise ValueError(
            f'atomic_open: mode must be "wb" or "w", got {mode!r}')
    path = osp.abspath(path)
    folder = osp.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f'.{osp.basename(path)}.', suffix='.tmp', dir=folder)
    try:
        kwargs = {} if 'b' in mode else dict(encoding='utf-8', newline='')
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates files with mode 0600; results are meant to be read
        # like any other output, so use the usual umask-derived permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_write_bytes(path: str, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically and return ``path``."""
    with atomic_open(path, 'wb') as f:
        f.write(data)
    return path


def atomic_write_text(path: str, text: str) -> str:
    """Write ``text`` (UTF-8) to ``path`` atomically and return ``path``."""
    with atomic_open(path, 'w') as f:
        f.write(text)
    return path


def atomic_write_png(path: str, array: np.ndarray) -> str:
    """Encode a 2-D uint8 label map as a grayscale PNG and write it atomically.

    Args:
        path (str): Destination ``.png`` file.
        array (np.ndarray): (H, W) array with values in [0, 255].
    """
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f'atomic_write_png({path!r}): expected a (H, W) '
                         f'label map, got shape {tuple(array.shape)}')
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f'atomic_write_png({path!r}): values must lie in '
                         f'[0, 255], got [{array.min()}, {array.max()}]')
    buf = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))
    image.save(buf, format='PNG')
    return atomic_write_bytes(path, buf.getvalue())


def _to_builtin(obj):
    """json.dump ``default`` hook for numpy/torch scalars and arrays."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, 'tolist'):  # torch tensors
        return obj.tolist()
    raise TypeError(f'{type(obj).__name__} is not JSON serializable')


def atomic_write_json(path: str, obj, indent: int = 2) -> str:
    """Dump ``obj`` as JSON (numpy values allowed; NaN kept as ``NaN``)."""
    text = json.dumps(obj, indent=indent, default=_to_builtin)
    return atomic_write_text(path, text + '\n')


def atomic_write_zip(path: str,
                     members: Iterable[Tuple[str, Union[str, bytes]]]) -> str:
    """Write a zip archive atomically.

    Args:
        path (str): Destination ``.zip`` file.
        members (iterable[tuple[str, str | bytes]]): ``(arcname, source)``
            pairs; ``source`` is a file path or the file's bytes.

    Returns:
        str: ``path``.
    """
    with atomic_open(path, 'wb') as f:
        with zipfile.ZipFile(f, 'w', compression=zipfile.ZIP_DEFLATED) as zf:
            seen = set()
            for arcname, source in members:
                if arcname in seen:
                    raise ValueError(f'atomic_write_zip({path!r}): duplicate '
                                     f'archive member {arcname!r}')
                seen.add(arcname)
                if isinstance(source, bytes):
                    zf.writestr(arcname, source)
                else:
                    zf.write(source, arcname)
    return path
