"""Gated fusion of the current frame with the memory read-out (ERFNet)."""
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
class GatedFusion(FusionBase):
    """Gated fusion of the query value and the memory read-out (ERFNet).

    The "second attention" of Local Memory Attention for ERFNet::

        q' = ReLU(Dropout2d(BN(query)))          # (B, Cq, H, W)
        m' = ReLU(Dropout2d(BN(memory)))         # (B, Cm, H, W)
        g1 = sigmoid(conv3x3_1(cat(q', m')))     # (B, G, H, W)
        g2 = sigmoid(conv3x3_2(cat(q', m')))     # (B, G, H, W)
        out = ReLU(BN(conv_q(q') * g1 + conv_m(m') * g2))   # (B, Cout, H, W)

    With ``quality_channels`` > 0 the gates also see how well the memory
    matches (``LocalMemoryNeck(match_quality=...)``, e.g. the attention's
    log-normaliser), normalised by its own BN: ``cat(q', m', BN(quality))``.
    Their weights on it start at zero, so the fusion starts as without it.

    ``conv_q`` and ``conv_m`` are projections to ``out_channels``, with a
    bias when ``proj_bias`` (the authors' ERFNet fusion has one). The
    following BN does not make that bias redundant: each projection is
    multiplied by its gate before the sum is normalised, so a bias ``b``
    adds ``b * g`` with a gate that varies over pixels, not a constant.
    ``G`` (``gate_channels``) is 1 by default: one weight per pixel and
    branch, broadcast over the channels; ``gate_channels=out_channels``
    gives one weight per channel (the authors' ERFNet fusion).
    The two gate convolutions are computed by one layer ``gates`` with
    ``2G`` outputs (the first ``G`` for the query), which is faster on CPU
    than two thin convolutions.

    Args:
        query_channels (int): Channels ``Cq`` of the current frame's value.
        memory_channels (int): Channels ``Cm`` of the memory read-out.
        out_channels (int): Channels ``Cout`` of the fused output.
        dropout_ratio (float): Probability of ``Dropout2d`` on both inputs.
            Defaults to 0.3.
        gate_channels (int): Channels of each gate, 1 or ``out_channels``.
            Defaults to 1.
        gate_kernel_size (int): Kernel size of the gate convolutions (odd).
            Defaults to 3.
        proj_kernel_size (int): Kernel size of the projections ``conv_q``
            and ``conv_m`` (odd). Defaults to 1.
        proj_bias (bool): Give ``conv_q`` and ``conv_m`` a bias. Defaults
            to False.
        quality_channels (int): Channels of the match-quality input of the
            gates; 0: none (the paper's fusion). Defaults to 0.
        norm_cfg (dict): Normalisation of the two inputs (before dropout)
            and of the output. Defaults to ``dict(type='BN',
            requires_grad=True)``.
        act_cfg (dict): Activation of the two inputs and of the output.
            Defaults to ``dict(type='ReLU')``.
        init_cfg (dict or list[dict], optional): Initialisation config.
    """

    def __init__(self,
                 query_channels: int,
                 memory_channels: int,
                 out_channels: int,
                 dropout_ratio: float = 0.3,
                 gate_channels: int = 1,
                 gate_kernel_size: int = 3,
                 proj_kernel_size: int = 1,
                 proj_bias: bool = False,
                 quality_channels: int = 0,
                 norm_cfg: ConfigType = dict(type='BN', requires_grad=True),
                 act_cfg: ConfigType = dict(type='ReLU'),
                 init_cfg: OptMultiConfig = None):
        super().__init__(
            query_channels,
            memory_channels,
            out_channels,
            init_cfg=init_cfg,
            quality_channels=quality_channels)
        name = type(self).__name__
        check_positive_int(gate_kernel_size, 'gate_kernel_size', name)
        check_positive_int(proj_kernel_size, 'proj_kernel_size', name)
        if gate_kernel_size % 2 == 0 or proj_kernel_size % 2 == 0:
            raise ValueError(f'{name}: kernel sizes must be odd, got '
                             f'gate_kernel_size={gate_kernel_size}, '
                             f'proj_kernel_size={proj_kernel_size}')
        if gate_channels not in (1, out_channels):
            raise ValueError(f'{name}: `gate_channels` must be 1 or '
                             f'out_channels={out_channels}, got '
                             f'{gate_channels!r}')
        if not 0.0 <= float(dropout_ratio) < 1.0:
            raise ValueError(f'{name}: `dropout_ratio` must be in [0, 1), '
                             f'got {dropout_ratio!r}')
        if not isinstance(proj_bias, bool):
            raise TypeError(f'{name}: `proj_bias` must be a bool, got '
                            f'{proj_bias!r}')
        self.dropout_ratio = float(dropout_ratio)
        self.gate_channels = gate_channels
        self.proj_bias = proj_bias

        def pre(channels: int) -> nn.Sequential:
            return nn.Sequential(
                build_norm_layer(norm_cfg, channels)[1],
                nn.Dropout2d(self.dropout_ratio),
                build_activation_layer(act_cfg))

        self.query_pre = pre(query_channels)
        self.memory_pre = pre(memory_channels)
        # Both gate convolutions in one layer: output channels
        # [0, G) are conv3x3_1 (query gate), [G, 2G) conv3x3_2 (memory gate).
        self.gates = nn.Conv2d(
            query_channels + memory_channels + quality_channels,
            2 * gate_channels,
            gate_kernel_size,
            padding=gate_kernel_size // 2)
        if quality_channels:
            self.quality_norm = build_norm_layer(norm_cfg,
                                                 quality_channels)[1]
        proj_pad = proj_kernel_size // 2
        self.query_proj = nn.Conv2d(
            query_channels,
            out_channels,
            proj_kernel_size,
            padding=proj_pad,
            bias=proj_bias)
        self.memory_proj = nn.Conv2d(
            memory_channels,
            out_channels,
            proj_kernel_size,
            padding=proj_pad,
            bias=proj_bias)
        self.out_norm = build_norm_layer(norm_cfg, out_channels)[1]
        self.out_act = build_activation_layer(act_cfg)
        self.zero_quality_weights()

    @torch.no_grad()
    def zero_quality_weights(self) -> None:
        """Zero the gates' weights on the match-quality input: the fusion
        computes what it computes without it."""
        if self.quality_channels:
            self.gates.weight[:, -self.quality_channels:].zero_()

    def init_weights(self) -> None:
        """Initialise the weights, then zero the gates' weights on the
        match-quality input (unless a ``Pretrained`` init_cfg gave them)."""
        super().init_weights()
        if not init_from_pretrained(self):
            self.zero_quality_weights()

    def forward(self,
                query: Tensor,
                memory: Optional[Tensor],
                quality: Optional[Tensor] = None) -> Tensor:
        """Gate the pre-activated query and read-out with two per-channel
        gates from their concatenation, sum their projections, then norm and
        activation.

        Args:
            query (Tensor): Value of the current frame, (B, Cq, H, W).
            memory (Tensor, optional): Memory read-out, (B, Cm, H, W); None
                (empty memory) reads as zeros.
            quality (Tensor, optional): Match quality (B, quality_channels,
                H, W); required with ``quality_channels`` > 0, else None.

        Returns:
            Tensor: Fused features, (B, Cout, H, W).
        """
        if memory is None:
            memory = query.new_zeros(
                (query.shape[0], self.memory_channels, *query.shape[2:]))
        check_fusion_inputs(type(self).__name__, query, memory,
                            self.query_channels, self.memory_channels)
        quality = self.check_quality(quality, query)
        query = self.query_pre(query)
        memory = self.memory_pre(memory)
        inputs = [query, memory]
        if quality is not None:
            inputs.append(self.quality_norm(quality))
        gates = torch.sigmoid(self.gates(torch.cat(inputs, dim=1)))
        query_gate, memory_gate = gates.split(self.gate_channels, dim=1)
        out = (self.query_proj(query) * query_gate +
               self.memory_proj(memory) * memory_gate)
        return self.out_act(self.out_norm(out))
