"""The Local Memory Attention module, as a segmentor neck."""
import math
import numbers
import warnings
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, OptMultiConfig
from torch import Tensor

from ...ops import ATTENTION_IMPLS, ext_available
from .utils import check_positive_int, init_from_pretrained

Features = Union[Tensor, Sequence[Tensor]]

PADDING_MODES = ('zeros', 'mask')
EMPTY_MEMORY_MODES = ('skip', 'zeros')
#: Logit bias of a memory frame that is left out of the softmax (see
#: :meth:`LocalMemoryNeck.read_memory`): its exp() relative to the logits of
#: the valid frames (dot products far below 6e4 in magnitude) underflows to
#: exactly 0, and it is finite in every dtype the kernels take (the float16
#: minimum), so no kernel computes -inf - (-inf).
MASKED_FRAME_LOGIT = -65504.0
ATTN_IMPLS = tuple(ATTENTION_IMPLS)  # ('fused', 'unfused', 'reference')
#: What ``LocalMemoryNeck(match_quality=...)`` gives the fusion.
MATCH_QUALITY_MODES = (None, 'lse')


class FrameMemory(NamedTuple):
    """Memory keys and values of the past frames, oldest first.

    A named tuple of two tensors, so ``torch.compile`` and ``torch.export``
    see its tensors as ordinary inputs and outputs.

    Attributes:
        keys (Tensor): (B, T, key_channels, h, w).
        values (Tensor): (B, T, Cv, h, w).
    """
    keys: Tensor
    values: Tensor

    @property
    def num_frames(self) -> int:
        """int: The number ``T`` of frames held."""
        return int(self.keys.shape[1])


Memory = Union[FrameMemory, Tuple[Tensor, Tensor]]


@MODELS.register_module()
class LocalMemoryNeck(BaseModule):
    """Local Memory Attention (Paul et al., IROS 2021) as a segmentor neck.

    The neck reads one backbone output (``in_index``) of the current (key)
    frame and of the ``T`` previous frames and replaces it with a fused
    feature map of the same shape, so the decode head is unchanged; the
    other backbone outputs pass through untouched.

    For every frame a key (3x3 conv to ``key_channels``) and a value (3x3
    conv to ``value_channels``, or the raw feature when ``value_channels``
    is None) are computed. Memory frames use ``memory_key`` /
    ``memory_value``; the current frame has its own ``query_key`` (initialised
    equal to ``memory_key``) and ``query_value`` heads. For every query pixel
    the local attention (:mod:`lma_mmseg.ops`, see ``attn_impl``) takes dot
    products with the memory keys in a ``window`` x ``window`` window
    (``dilation``) centred on the same position in each memory frame, runs
    one softmax over all ``T * window**2`` positions and returns the
    weighted sum of the memory values (the read-out). The fusion module
    (``fusion``, built with ``query_channels`` / ``memory_channels`` = value
    width and ``out_channels = in_channels``) combines the current frame's
    value with the read-out.

    Empty memory (``memory=None`` or ``T == 0``, e.g. a lone image or the
    first frame of a stream): with ``empty_memory='skip'`` (the default, as
    the authors' model does) the fusion is skipped and the raw features are
    returned, so the decoder sees exactly the single-frame model's input;
    with ``'zeros'`` the read-out is all zeros (what the attention returns
    when every memory position lies outside the map under zero padding)
    and the fusion runs on it as usual.

    The memory is a :class:`FrameMemory` (keys, values). Clip-mode
    training/inference and the per-frame streaming step of the segmentor
    use the same pieces: :meth:`encode_memory` (a frame's key and value)
    and :meth:`forward` (read the memory and fuse); clip mode stacks the
    clip's frames with :meth:`push_memory`, the streaming step keeps a
    fixed-size memory of its own and passes the frames at its offsets with
    a ``valid`` mask (the frames that exist yet).

    Shapes (``h, w`` the size of the ``in_index`` feature map)::

        features[in_index]  (B, in_channels, h, w)
        memory keys         (B, T, key_channels, h, w)
        memory values       (B, T, Cv, h, w)   Cv = value_channels or
                                               in_channels when None
        output[in_index]    (B, in_channels, h, w)

    Args:
        in_channels (int): Channels of the backbone output ``in_index``.
        key_channels (int): Channels of keys and queries.
        value_channels (int, optional): Channels of the values; None uses
            the raw feature (``in_channels`` wide) as value. Defaults to None.
        window (int): Odd side ``P`` of the local attention window.
            Defaults to 21.
        dilation (int): Dilation of the window. Defaults to 1.
        scale (float): Factor applied to the dot products before the
            softmax (1.0 in the paper: no ``1/sqrt(d)`` scaling).
            Defaults to 1.0.
        padding (str): ``'zeros'`` (the paper: out-of-map positions enter
            the softmax with logit 0 and value 0) or ``'mask'`` (they are
            left out of the softmax). Defaults to ``'zeros'``.
        memory_length (int): Number ``T`` of memory frames that streaming
            inference reads (the segmentor's ``memory_offsets``, one
            position-bias row each). In clip mode the memory holds every
            frame of the clip but the last. Defaults to 3.
        in_index (int): Which backbone output to read (negative counts from
            the end). Defaults to -1.
        position_bias (bool): Learn a position prior: one logit per memory
            frame and window offset, ``position_bias`` of shape
            ``(memory_length, window * window)``, added to the scaled dot
            products before the joint softmax (as Swin's and NATTEN's
            relative position bias), initialised to 0 so the neck starts as
            the paper's. Row ``t`` belongs to the ``t``-th of the
            ``memory_length`` frames, oldest first; a memory of fewer frames
            uses the rows of the most recent ones. It competes with raw dot
            products, so give it a larger learning rate, e.g.
            ``paramwise_cfg=dict(custom_keys={'neck.position_bias':
            dict(lr_mult=100)})``. Defaults to False.
        residual (bool): Residual, identity-at-init fusion: the output is
            ``feat + alpha * fusion(...)`` with one learnable ``alpha`` per
            channel (``residual_scale``), initialised to 0, so the untrained
            neck returns the backbone's map unchanged and LMA starts as the
            single-frame model it extends. False is the paper's form, where
            the fusion output replaces the map. Defaults to False.
        key_gate (bool): With ``residual``, let the neck lower the key
            frame's share where the memory should replace it: the output is
            ``feat * (1 - kappa) + alpha * fusion(...)``, ``kappa =
            key_gate_scale * sigmoid(conv1x1(fusion(...)))`` one weight per
            pixel (the fusion's output has seen the frame, the read-out and
            the match quality), ``key_gate_scale`` a scalar initialised to 0
            so the neck still starts as the single-frame model. Like
            ``residual_scale`` it moves by about the learning rate per Adam
            step: give it a learning-rate multiplier
            (``custom_keys={'neck.key_gate_scale': dict(lr_mult=30)}``).
            Defaults to False.
        empty_memory (str): What an empty memory does: ``'skip'`` the
            fusion (raw features pass through) or run it on a ``'zeros'``
            read-out. Defaults to ``'skip'``.
        attn_impl (str): Which implementation of the local attention runs
            (all three compute the same read-out; see
            :data:`lma_mmseg.ops.ATTENTION_IMPLS`):

            - ``'fused'``: :func:`lma_mmseg.ops.local_attention`, the fused
              compiled kernels (fastest, least memory; no ``(B, T * P * P,
              h, w)`` attention in forward).
            - ``'unfused'``: :func:`lma_mmseg.ops.local_attention_unfused`,
              the compiled correlation, the softmax in PyTorch and the
              compiled aggregation (materialises the attention; the
              baseline the fused kernels are measured against).
            - ``'reference'``:
              :func:`lma_mmseg.ops.local_attention_reference`, pure
              PyTorch (any device and dtype, no compiled extension; memory
              hungry).

            When ``lma_mmseg._ext`` cannot be imported, ``'fused'`` and
            ``'unfused'`` fall back to ``'reference'`` with a warning; the
            attribute ``attn_impl`` holds the implementation that runs.
            The choice changes no parameter, so checkpoints load into any
            of them. Defaults to ``'fused'``.
        match_quality (str, optional): Give the fusion how well the memory
            matches each query pixel, so its gates can lean on the read-out
            where the memory matches and on the frame where it does not.
            ``'lse'``: the softmax's log-normaliser (the op's
            ``return_lse``) relative to a uniform softmax of zero logits,
            ``lse - log(T * window**2)``, one channel (B, 1, h, w), 0 where
            no memory frame is valid. The fusion must take it (``GatedFusion``
            and ``GatedDownFusion`` do, through ``quality_channels``, zero
            at init so the fusion starts as without it). None: the paper's
            fusion inputs only. Defaults to None.
        fusion (dict): Config of the fusion module, e.g.
            ``dict(type='GatedFusion')`` or
            ``dict(type='GatedDownFusion', channels=256)``. The channel
            arguments are filled in by the neck.
        init_cfg (dict or list[dict], optional): Initialisation config.
    """

    def __init__(self,
                 in_channels: int,
                 key_channels: int,
                 value_channels: Optional[int] = None,
                 window: int = 21,
                 dilation: int = 1,
                 scale: float = 1.0,
                 padding: str = 'zeros',
                 memory_length: int = 3,
                 in_index: int = -1,
                 empty_memory: str = 'skip',
                 residual: bool = False,
                 key_gate: bool = False,
                 position_bias: bool = False,
                 attn_impl: str = 'fused',
                 match_quality: Optional[str] = None,
                 fusion: ConfigType = dict(type='GatedFusion'),
                 init_cfg: OptMultiConfig = None):
        super().__init__(init_cfg=init_cfg)
        name = type(self).__name__
        self.in_channels = check_positive_int(in_channels, 'in_channels',
                                              name)
        self.key_channels = check_positive_int(key_channels, 'key_channels',
                                               name)
        if value_channels is not None:
            check_positive_int(value_channels, 'value_channels', name)
        self.value_channels = value_channels
        check_positive_int(window, 'window', name)
        if window % 2 == 0:
            raise ValueError(f'{name}: `window` must be odd so the window '
                             f'has a centre, got {window}')
        self.window = window
        self.dilation = check_positive_int(dilation, 'dilation', name)
        if (isinstance(scale, bool) or not isinstance(scale, numbers.Real)
                or not scale > 0):
            raise ValueError(f'{name}: `scale` must be a positive number, '
                             f'got {scale!r}')
        self.scale = float(scale)
        if padding not in PADDING_MODES:
            raise ValueError(f'{name}: `padding` must be one of '
                             f'{PADDING_MODES}, got {padding!r}')
        self.padding = padding
        self.memory_length = check_positive_int(memory_length,
                                                'memory_length', name)
        if isinstance(in_index, bool) or not isinstance(in_index, int):
            raise ValueError(f'{name}: `in_index` must be an int, got '
                             f'{in_index!r}')
        self.in_index = in_index
        if empty_memory not in EMPTY_MEMORY_MODES:
            raise ValueError(f'{name}: `empty_memory` must be one of '
                             f'{EMPTY_MEMORY_MODES}, got {empty_memory!r}')
        self.empty_memory = empty_memory
        if not isinstance(residual, bool):
            raise ValueError(f'{name}: `residual` must be a bool, got '
                             f'{residual!r}')
        self.residual = residual
        if not isinstance(key_gate, bool):
            raise ValueError(f'{name}: `key_gate` must be a bool, got '
                             f'{key_gate!r}')
        if key_gate and not residual:
            raise ValueError(f'{name}: key_gate=True lowers the key frame\'s '
                             'share in the residual output; it needs '
                             'residual=True')
        self.key_gate = key_gate
        if not isinstance(position_bias, bool):
            raise ValueError(f'{name}: `position_bias` must be a bool, got '
                             f'{position_bias!r}')
        self.attn_impl = self._resolve_attn_impl(attn_impl)
        if match_quality not in MATCH_QUALITY_MODES:
            raise ValueError(f'{name}: `match_quality` must be one of '
                             f'{MATCH_QUALITY_MODES}, got {match_quality!r}')
        self.match_quality = match_quality
        if not isinstance(fusion, dict) or 'type' not in fusion:
            raise ValueError(f'{name}: `fusion` must be a config dict with '
                             f'a `type`, got {fusion!r}')

        self.memory_key = nn.Conv2d(in_channels, key_channels, 3, padding=1)
        self.query_key = nn.Conv2d(in_channels, key_channels, 3, padding=1)
        if value_channels is None:
            self.memory_value = nn.Identity()
            self.query_value = nn.Identity()
        else:
            self.memory_value = nn.Conv2d(
                in_channels, value_channels, 3, padding=1)
            self.query_value = nn.Conv2d(
                in_channels, value_channels, 3, padding=1)
        fusion = dict(fusion)
        fusion.update(
            query_channels=self.out_value_channels,
            memory_channels=self.out_value_channels,
            out_channels=in_channels)
        if match_quality is not None:
            fusion.update(quality_channels=1)
        try:
            self.fusion = MODELS.build(fusion)
        except TypeError as exc:
            if match_quality is None or 'quality_channels' not in str(exc):
                raise
            raise ValueError(
                f'{name}: match_quality={match_quality!r} needs a fusion '
                f'that takes a match-quality input (quality_channels), but '
                f'{fusion["type"]} does not') from exc
        if residual:
            # identity at init: the neck starts as the single-frame model
            self.residual_scale = nn.Parameter(torch.zeros(in_channels))
        if key_gate:
            # kappa = 0 at init: the key frame keeps its whole share
            self.key_gate_conv = nn.Conv2d(in_channels, 1, 1)
            self.key_gate_scale = nn.Parameter(torch.zeros(1))
        # zero at init: the attention starts as the paper's
        self.position_bias = nn.Parameter(
            torch.zeros(self.memory_length, window * window)
        ) if position_bias else None
        self.copy_key_head()

    def _resolve_attn_impl(self, attn_impl: str) -> str:
        """Check ``attn_impl`` and fall back to ``'reference'`` when the
        compiled extension is missing."""
        name = type(self).__name__
        if not isinstance(attn_impl, str) or attn_impl not in ATTN_IMPLS:
            raise ValueError(f'{name}: `attn_impl` must be one of '
                             f'{ATTN_IMPLS}, got {attn_impl!r}')
        if attn_impl != 'reference' and not ext_available():
            warnings.warn(
                f"{name}: attn_impl={attn_impl!r} needs the compiled "
                'extension lma_mmseg._ext, which cannot be imported; '
                "running attn_impl='reference' (pure PyTorch) instead")
            return 'reference'
        return attn_impl

    @property
    def out_value_channels(self) -> int:
        """int: Channels ``Cv`` of the values (query and memory)."""
        if self.value_channels is None:
            return self.in_channels
        return self.value_channels

    @torch.no_grad()
    def copy_key_head(self) -> None:
        """Set the query key head equal to the memory key head."""
        self.query_key.weight.copy_(self.memory_key.weight)
        self.query_key.bias.copy_(self.memory_key.bias)

    def init_weights(self) -> None:
        """Initialise the weights, then the query key head from the memory
        key head (unless a ``Pretrained`` init_cfg gave both)."""
        super().init_weights()
        if not init_from_pretrained(self):
            self.copy_key_head()

    def _select(self, inputs: Features) -> Tuple[Tensor, int]:
        """Pick and check the feature map at ``in_index``.

        Returns:
            tuple: The feature map (B, in_channels, h, w) and its
            non-negative index (-1 when ``inputs`` is a single tensor).
        """
        name = type(self).__name__
        if isinstance(inputs, Tensor):
            feat, index = inputs, -1
        elif isinstance(inputs, (list, tuple)):
            num = len(inputs)
            if not -num <= self.in_index < num:
                raise ValueError(
                    f'{name}: `in_index`={self.in_index} is out of range '
                    f'for a backbone with {num} output(s)')
            index = self.in_index % num
            feat = inputs[index]
        else:
            raise TypeError(f'{name}: expected the backbone output (a '
                            f'tensor or a tuple of tensors), got '
                            f'{type(inputs).__name__}')
        if feat.dim() != 4 or feat.shape[1] != self.in_channels:
            raise ValueError(
                f'{name}: backbone output {self.in_index} must have shape '
                f'(B, in_channels={self.in_channels}, h, w), got '
                f'{tuple(feat.shape)}')
        return feat, index

    def encode_memory(self, inputs: Features) -> Tuple[Tensor, Tensor]:
        """Compute memory keys and values of frames.

        Args:
            inputs (Tensor | Sequence[Tensor]): Backbone output of N frames
                (the ``in_index`` map is (N, in_channels, h, w)).

        Returns:
            tuple[Tensor, Tensor]: Keys (N, key_channels, h, w) and values
            (N, Cv, h, w).
        """
        feat, _ = self._select(inputs)
        return self.memory_key(feat), self.memory_value(feat)

    def is_empty(self, memory: Optional[Memory]) -> bool:
        """Whether ``memory`` holds no frame (None or ``T == 0``)."""
        if memory is None:
            return True
        if not isinstance(memory, (tuple, list)) or len(memory) != 2:
            raise TypeError(f'{type(self).__name__}: `memory` must be a '
                            f'(keys, values) pair or None, got '
                            f'{type(memory).__name__}')
        return memory[0].shape[1] == 0

    def push_memory(self,
                    memory: Optional[Memory],
                    keys: Tensor,
                    values: Tensor,
                    max_length: Optional[int] = None) -> FrameMemory:
        """Append frames to the memory FIFO.

        Args:
            memory (FrameMemory, optional): The memory so far (None when
                empty), keys (B, T, key_channels, h, w) and values
                (B, T, Cv, h, w).
            keys (Tensor): Keys of the new frames (B, n, key_channels, h, w),
                oldest first, as :meth:`encode_memory` gives them per frame.
            values (Tensor): Their values (B, n, Cv, h, w).
            max_length (int, optional): Keep only the newest ``max_length``
                frames (a FIFO). None keeps every frame.

        Returns:
            FrameMemory: Keys (B, T', key_channels, h, w) and values
            (B, T', Cv, h, w), oldest first.
        """
        name = type(self).__name__
        if keys.dim() != 5 or values.dim() != 5 or keys.shape[:2] != \
                values.shape[:2]:
            raise ValueError(f'{name}: new memory keys and values must be '
                             f'(B, n, C, h, w) with the same B and n, got '
                             f'{tuple(keys.shape)} and {tuple(values.shape)}')
        if not self.is_empty(memory):
            self._check_memory(memory, keys.shape[0], *keys.shape[-2:])
            keys = torch.cat([memory[0], keys], dim=1)
            values = torch.cat([memory[1], values], dim=1)
        if max_length is not None and keys.shape[1] > max_length:
            keys = keys[:, -max_length:]
            values = values[:, -max_length:]
        return FrameMemory(keys, values)

    def _check_memory(self, memory: Memory, batch: int, height: int,
                      width: int) -> None:
        """Check the shapes of a non-empty memory."""
        name = type(self).__name__
        keys, values = memory
        if keys.dim() != 5 or (keys.shape[0], *keys.shape[2:]) != (
                batch, self.key_channels, height, width):
            raise ValueError(
                f'{name}: memory keys must have shape (B={batch}, T, '
                f'key_channels={self.key_channels}, {height}, {width}), '
                f'got {tuple(keys.shape)}')
        expected = (batch, keys.shape[1], self.out_value_channels, height,
                    width)
        if tuple(values.shape) != expected:
            raise ValueError(
                f'{name}: memory values must have shape (B={batch}, '
                f'T={keys.shape[1]}, {self.out_value_channels}, {height}, '
                f'{width}), got {tuple(values.shape)}')

    def read_memory(self,
                    query_key: Tensor,
                    memory: Optional[Memory],
                    valid: Optional[Tensor] = None,
                    return_quality: bool = False):
        """Read the memory with local attention.

        Args:
            query_key (Tensor): Query keys (B, key_channels, h, w).
            memory (FrameMemory, optional): Keys (B, T, key_channels, h, w)
                and values (B, T, Cv, h, w). None or T == 0 gives a zero
                read-out.
            valid (Tensor, optional): Bool (T,): which memory frames exist
                (the same for the B streams). The others are left out of
                the one softmax: every slot of their windows gets the logit
                bias :data:`MASKED_FRAME_LOGIT` (added to the position bias
                and, with ``padding='zeros'``, to the 0 of outside slots),
                so the read-out is the one of the valid frames alone. With
                no valid frame the read-out is zero, as for an empty memory.
                The choice is made with tensor ops (no Python branch on the
                values), so compiled and exported graphs hold it. None: all
                frames are valid.
            return_quality (bool): Also return the match quality (see
                ``match_quality``): ``lse - log(T * window**2)`` per query
                pixel, T the valid frames, (B, 1, h, w); 0 for an empty
                memory or no valid frame.

        Returns:
            Tensor | tuple[Tensor, Tensor]: Read-out (B, Cv, h, w); with
            ``return_quality`` also the match quality.
        """
        batch, _, height, width = query_key.shape
        if self.is_empty(memory):
            readout = query_key.new_zeros(
                (batch, self.out_value_channels, height, width))
            if not return_quality:
                return readout
            return readout, query_key.new_zeros((batch, 1, height, width))
        self._check_memory(memory, batch, height, width)
        keys, values = memory
        bias = self._bias_for(keys.shape[1])
        if valid is not None:
            self._check_valid(valid, keys.shape[1])
            any_valid = valid.any()
            # with no valid frame nothing is masked (no all-masked softmax)
            # and the read-out is replaced by zeros below
            keep = valid | ~any_valid
            if bias is None:
                bias = query_key.new_zeros(
                    (keys.shape[1], self.window * self.window))
            bias = bias.to(query_key.dtype)
            bias = torch.where(keep[:, None], bias,
                               bias.new_full((), MASKED_FRAME_LOGIT))
        readout = ATTENTION_IMPLS[self.attn_impl](
            query_key,
            keys,
            values,
            window=self.window,
            dilation=self.dilation,
            scale=self.scale,
            padding=self.padding,
            bias=bias,
            return_lse=return_quality)
        if return_quality:
            readout, lse = readout
            # relative to a uniform softmax of zero logits over the slots of
            # the valid frames
            slots = self.window**2
            if valid is None:
                quality = lse - math.log(keys.shape[1] * slots)
            else:
                frames = valid.sum().clamp(min=1).to(lse.dtype)
                quality = lse - torch.log(frames * slots)
            quality = quality.to(readout.dtype)[:, None]
        if valid is not None:
            readout = torch.where(any_valid, readout,
                                  readout.new_zeros(()))
            if return_quality:
                quality = torch.where(any_valid, quality,
                                      quality.new_zeros(()))
        return (readout, quality) if return_quality else readout

    def _check_valid(self, valid: Tensor, num_frames: int) -> None:
        """Check a validity mask of ``num_frames`` memory frames."""
        if (not isinstance(valid, Tensor) or valid.dtype != torch.bool
                or tuple(valid.shape) != (num_frames, )):
            raise ValueError(
                f'{type(self).__name__}: `valid` must be a bool tensor of '
                f'shape (T={num_frames}, ), one flag per memory frame, got '
                f'{getattr(valid, "dtype", type(valid).__name__)} of shape '
                f'{tuple(getattr(valid, "shape", ()))}')

    def _bias_for(self, num_frames: int) -> Optional[Tensor]:
        """The position bias rows of a memory of ``num_frames`` frames
        (the most recent ones; all ``memory_length`` rows for a streaming
        step, which reads a frame per memory offset and marks the missing
        ones in ``valid``), or None without a position bias."""
        if self.position_bias is None:
            return None
        if num_frames > self.memory_length:
            raise ValueError(
                f'{type(self).__name__}: the position bias has '
                f'memory_length={self.memory_length} rows, but the memory '
                f'holds {num_frames} frames; set memory_length to the '
                f'number of memory frames of the clips')
        return self.position_bias[self.memory_length - num_frames:]

    def forward(self,
                inputs: Features,
                memory: Optional[Memory] = None,
                valid: Optional[Tensor] = None,
                return_readout: bool = False):
        """Fuse the current frame's features with the memory read-out.

        Args:
            inputs (Tensor | Sequence[Tensor]): Backbone output of the
                current frame; the map at ``in_index`` is
                (B, in_channels, h, w).
            memory (FrameMemory, optional): Memory keys
                (B, T, key_channels, h, w) and values (B, T, Cv, h, w),
                oldest first (see :meth:`push_memory`). None (or T == 0)
                means an empty memory (see ``empty_memory``).
            valid (Tensor, optional): Bool (T,): which memory frames exist
                (a streaming step's fixed-size memory at the start of a
                stream); the others are left out of the attention (see
                :meth:`read_memory`). With no valid frame the result is the
                empty memory's, chosen with ``torch.where``. None: all
                frames are valid.
            return_readout (bool): Also return the memory read-out
                (B, Cv, h, w), e.g. for a loss on it (the segmentor's
                ``memory_head``); None where the fusion is skipped (an empty
                memory with ``empty_memory='skip'``).

        Returns:
            Tensor | tuple[Tensor]: ``inputs`` with the ``in_index`` map
            replaced by the fused map (B, in_channels, h, w); a tensor when
            ``inputs`` is a tensor, else a tuple. With an empty memory and
            ``empty_memory='skip'`` the map is the input map itself. With
            ``return_readout`` a pair: that and the read-out.
        """
        feat, index = self._select(inputs)
        readout = None
        if self.is_empty(memory) and self.empty_memory == 'skip':
            fused = feat
        else:
            query_key = self.query_key(feat)
            if self.match_quality is None:
                readout = self.read_memory(query_key, memory, valid)
                fused = self.fusion(self.query_value(feat), readout)
            else:
                readout, quality = self.read_memory(
                    query_key, memory, valid, return_quality=True)
                fused = self.fusion(self.query_value(feat), readout, quality)
            if self.residual:
                key = feat
                if self.key_gate:
                    kappa = self.key_gate_scale * torch.sigmoid(
                        self.key_gate_conv(fused))
                    key = feat * (1 - kappa)
                fused = key + self.residual_scale.view(1, -1, 1, 1) * fused
            if valid is not None and self.empty_memory == 'skip':
                fused = torch.where(valid.any(), fused, feat)
        if isinstance(inputs, Tensor):
            outs = fused
        else:
            outs = list(inputs)
            outs[index] = fused
            outs = tuple(outs)
        return (outs, readout) if return_readout else outs
