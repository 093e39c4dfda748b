"""Gated fusion through a bottleneck (PSPNet variant)."""
from typing import Optional

import torch
import torch.nn as nn
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, OptMultiConfig
from torch import Tensor

from .utils import (FusionBase, check_fusion_inputs, check_positive_int,
                    init_from_pretrained)


@MODELS.register_module()
class GatedDownFusion(FusionBase):
    """Gated fusion through a ``channels``-wide bottleneck (PSPNet).

    The "second attention" of Local Memory Attention for wide features such
    as ResNet-D8 layer4 (2048 channels)::

        d   = ReLU(BN(conv1x1_q(query) + conv1x1_m(memory)))  # (B, C, h, w)
        out = query * sigmoid(up_q(d)) + memory * sigmoid(up_m(d))
        out = ReLU(BN(out))                               # (B, Cout, h, w)

    With ``quality_channels`` > 0 the bottleneck also sees how well the
    memory matches (``LocalMemoryNeck(match_quality=...)``):
    ``d = ReLU(BN(... + conv1x1_mq(quality)))``, ``conv1x1_mq`` bias-free
    and zero at init, so the fusion starts as without it.

    ``up_q`` and ``up_m`` are two distinct 1x1 up-projections from the
    bottleneck back to the input width. The gates multiply the inputs
    channel-wise, so ``query_channels`` must equal ``memory_channels``. When
    ``out_channels`` differs from them, a bias-free 1x1 projection maps the
    gated sum to ``out_channels`` before the final BN and ReLU.

    With ``down_bias`` the two down-projections carry a bias each, as in the
    authors' ``FusionDown`` (mattpfr/lmanet ``models/fusion.py``, 1x1
    convolutions with ``bias=True``: 2 x ``channels`` parameters more). The
    biases add one constant per channel right before the bottleneck's BN,
    which subtracts it with the batch mean in training (the loss gives them
    no gradient; only weight decay moves them) and with the running mean,
    which tracks it, in eval mode: they change the parameter count and the
    checkpoint layout, not what the fusion can compute.

    Args:
        query_channels (int): Channels of the current frame's value.
        memory_channels (int): Channels of the memory read-out (equal to
            ``query_channels``).
        out_channels (int): Channels ``Cout`` of the fused output.
        channels (int): Bottleneck width ``C``. Defaults to 256.
        down_bias (bool): Give ``conv1x1_q`` and ``conv1x1_m`` (the
            down-projections) a bias. Defaults to False.
        quality_channels (int): Channels of the match-quality input; 0:
            none (the paper's fusion). Defaults to 0.
        norm_cfg (dict): Normalisation of the bottleneck and of the output
            (default: BN with learnable affine parameters).
        act_cfg (dict): Activation of the bottleneck and of the output
            (default: ReLU).
        init_cfg (dict or list[dict], optional): Initialisation config.
    """

    def __init__(self, query_channels: int, memory_channels: int,
                 out_channels: int, channels: int = 256,
                 down_bias: bool = False,
                 quality_channels: int = 0,
                 norm_cfg: ConfigType = dict(type='BN', requires_grad=True),
                 act_cfg: ConfigType = dict(type='ReLU'),
                 init_cfg: OptMultiConfig = None):
        super().__init__(query_channels, memory_channels, out_channels,
                         init_cfg, quality_channels)
        name = type(self).__name__
        self.channels = check_positive_int(channels, 'channels', name)
        if query_channels != memory_channels:
            raise ValueError(
                f'{name}: the gates multiply channel-wise, so '
                f'`query_channels` ({query_channels}) must equal '
                f'`memory_channels` ({memory_channels})')
        if not isinstance(down_bias, bool):
            raise TypeError(f'{name}: `down_bias` must be a bool, got '
                            f'{down_bias!r}')
        self.down_bias = down_bias
        self.query_down = nn.Conv2d(
            query_channels, channels, 1, bias=down_bias)
        self.memory_down = nn.Conv2d(
            memory_channels, channels, 1, bias=down_bias)
        if quality_channels:
            self.quality_down = nn.Conv2d(
                quality_channels, channels, 1, bias=False)
            nn.init.zeros_(self.quality_down.weight)
        self.down_norm = build_norm_layer(norm_cfg, channels)[1]
        self.down_act = build_activation_layer(act_cfg)
        self.query_up = nn.Conv2d(channels, query_channels, 1)
        self.memory_up = nn.Conv2d(channels, memory_channels, 1)
        if out_channels != query_channels:
            self.out_proj = nn.Conv2d(
                query_channels, out_channels, 1, bias=False)
        else:
            self.out_proj = nn.Identity()
        self.out_norm = build_norm_layer(norm_cfg, out_channels)[1]
        self.out_act = build_activation_layer(act_cfg)

    def init_weights(self) -> None:
        """Initialise the weights; the match-quality projection stays zero
        (unless a ``Pretrained`` init_cfg gave it)."""
        super().init_weights()
        if self.quality_channels and not init_from_pretrained(self):
            nn.init.zeros_(self.quality_down.weight)

    def forward(self,
                query: Tensor,
                memory: Optional[Tensor],
                quality: Optional[Tensor] = None) -> Tensor:
        """``d = act(norm(down(query) + down'(memory)))``, then
        ``act(norm(query * sigmoid(up(d)) + memory * sigmoid(up'(d))))``.

        Args:
            query (Tensor): Value of the current frame, (B, Cq, H, W).
            memory (Tensor, optional): Memory read-out, (B, Cm, H, W) with
                Cm == Cq; None (empty memory) reads as zeros.
            quality (Tensor, optional): Match quality (B, quality_channels,
                H, W); required with ``quality_channels`` > 0, else None.

        Returns:
            Tensor: Fused features, (B, Cout, H, W).
        """
        if memory is None:
            memory = torch.zeros_like(query)
        check_fusion_inputs(type(self).__name__, query, memory,
                            self.query_channels, self.memory_channels)
        quality = self.check_quality(quality, query)
        down = self.query_down(query) + self.memory_down(memory)
        if quality is not None:
            down = down + self.quality_down(quality)
        down = self.down_act(self.down_norm(down))
        out = (query * torch.sigmoid(self.query_up(down)) +
               memory * torch.sigmoid(self.memory_up(down)))
        return self.out_act(self.out_norm(self.out_proj(out)))
