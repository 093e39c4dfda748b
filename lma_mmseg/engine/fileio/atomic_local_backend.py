"""A local file backend whose writes are atomic."""
from pathlib import Path
from typing import Union

from mmengine.fileio import LocalBackend, register_backend

from ...fileio import atomic_write_bytes, atomic_write_text


class AtomicLocalBackend(LocalBackend):
    """mmengine's :class:`~mmengine.fileio.LocalBackend` with atomic ``put``.

    ``LocalBackend.put`` opens the destination with ``'wb'`` and writes in
    place, so a process killed mid-write leaves a truncated file under the
    final name (for checkpoints: a broken ``iter_N.pth``). This backend writes
    through :mod:`lma_mmseg.fileio` (temporary file in the same folder,
    ``fsync``, rename), so the destination always holds a complete file.

    Registered under the name ``'atomic_local'``; select it wherever mmengine
    takes ``backend_args``, e.g.
    ``CheckpointHook(backend_args=dict(backend='atomic_local'))``. Reads are
    those of :class:`~mmengine.fileio.LocalBackend`.
    """

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        """Write bytes to ``filepath`` atomically, creating its folder."""
        atomic_write_bytes(filepath, obj)

    def put_text(
            self,
            obj: str,
            filepath: Union[str, Path],
            encoding: str = 'utf-8') -> None:
        """Write text to ``filepath`` atomically, creating its folder."""
        atomic_write_text(filepath, obj, encoding=encoding)


register_backend('atomic_local', AtomicLocalBackend, force=True)
