"""Argument and shape checks shared by the memory neck and fusions."""
from typing import Optional

from mmengine.model import BaseModule
from torch import Tensor


def check_positive_int(value, name: str, owner: str) -> int:
    """Return ``value`` if it is a positive int, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f'{owner}: `{name}` must be a positive int, '
                         f'got {value!r}')
    return value


def init_from_pretrained(module: BaseModule) -> bool:
    """Whether ``module``'s ``init_cfg`` loads pretrained weights (then the
    weights it sets up itself after ``init_weights`` must stay as loaded)."""
    init_cfgs = module.init_cfg or []
    if isinstance(init_cfgs, dict):
        init_cfgs = [init_cfgs]
    return any(cfg.get('type') == 'Pretrained' for cfg in init_cfgs)


class FusionBase(BaseModule):
    """Base of the fusion modules: checks and stores their channels.

    Args:
        query_channels (int): Channels ``Cq`` of the current frame's value.
        memory_channels (int): Channels ``Cm`` of the memory read-out.
        out_channels (int): Channels ``Cout`` of the fused output.
        quality_channels (int): Channels ``Cmq`` of the match-quality input
            (``LocalMemoryNeck(match_quality=...)``); 0: none.
        init_cfg (dict or list[dict], optional): Initialisation config.
    """

    def __init__(self, query_channels: int, memory_channels: int,
                 out_channels: int, init_cfg=None,
                 quality_channels: int = 0) -> None:
        super().__init__(init_cfg=init_cfg)
        owner = type(self).__name__
        self.query_channels = check_positive_int(query_channels,
                                                 'query_channels', owner)
        self.memory_channels = check_positive_int(memory_channels,
                                                  'memory_channels', owner)
        self.out_channels = check_positive_int(out_channels, 'out_channels',
                                               owner)
        if quality_channels != 0:
            check_positive_int(quality_channels, 'quality_channels', owner)
        self.quality_channels = quality_channels

    def check_quality(self, quality: Optional[Tensor],
                      query: Tensor) -> Optional[Tensor]:
        """Check the match-quality input against ``quality_channels`` and
        the query's shape; return it."""
        owner = type(self).__name__
        if self.quality_channels == 0:
            if quality is not None:
                raise ValueError(
                    f'{owner}: got a match-quality input but '
                    f'quality_channels=0 (build it with quality_channels)')
            return None
        expected = (query.shape[0], self.quality_channels, *query.shape[2:])
        if quality is None or tuple(quality.shape) != expected:
            raise ValueError(
                f'{owner}: `quality` must have shape {expected} '
                f'(quality_channels={self.quality_channels}), got '
                f'{None if quality is None else tuple(quality.shape)}')
        return quality


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
