from .atomic import (
    atomic_write_bytes, atomic_write_text, remove_stale_parts, stale_parts)
from .atomic_local_backend import AtomicLocalBackend

__all__ = [
    'atomic_write_bytes', 'atomic_write_text', 'stale_parts',
    'remove_stale_parts', 'AtomicLocalBackend'
]
