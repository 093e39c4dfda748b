"""Argument and shape checks shared by the memory neck and fusions."""
from torch import Tensor


def check_positive_int(value, name: str, owner: str) -> int:
    """Return ``value`` if it is a positive int, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f'{owner}: `{name}` must be a positive int, '
                         f'got {value!r}')
    return value


def check_fusion_inputs(owner: str, query: Tensor, memory: Tensor,
                        query_channels: int, memory_channels: int) -> None:
    """Check the shapes of the two inputs of a fusion module."""
    if query.dim() != 4 or query.shape[1] != query_channels:
        raise ValueError(f'{owner}: `query` must have shape (B, '
                         f'{query_channels}, H, W), got '
                         f'{tuple(query.shape)}')
    if memory.dim() != 4 or memory.shape[1] != memory_channels:
        raise ValueError(f'{owner}: `memory` must have shape (B, '
                         f'{memory_channels}, H, W), got '
                         f'{tuple(memory.shape)}')
    if (query.shape[0], *query.shape[2:]) != (memory.shape[0],
                                              *memory.shape[2:]):
        raise ValueError(f'{owner}: `query` {tuple(query.shape)} and '
                         f'`memory` {tuple(memory.shape)} differ in batch '
                         f'size or spatial size')
