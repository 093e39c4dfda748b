"""Encoder-decoder segmentor with a memory of past frames."""
import inspect
from contextlib import contextmanager
from typing import (Callable, Iterator, List, NamedTuple, Optional, Sequence,
                    Tuple, Union)

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, OptSampleList, SampleList
from torch import Tensor
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils._pytree import tree_map

from ..necks.local_memory_neck import Features, FrameMemory


class StreamMemory(NamedTuple):
    """What :meth:`VideoEncoderDecoder.step` carries from frame to frame.

    A buffer of fixed size ``K = max(|offset|)`` (the oldest memory offset
    of the model): the memory keys and values of the newest ``K`` frames of
    the stream, oldest first, and the number of frames seen. Before frame
    ``t`` is segmented, slot ``K - d`` holds frame ``t - d``, which exists
    when ``count >= d``; the other slots hold zeros and are left out of the
    attention. The shapes never change along a stream, so a compiled step
    compiles once and an exported step takes and returns the same tensors.
    A named tuple of tensors: ``torch.compile`` and ``torch.export`` see
    them as ordinary inputs and outputs.

    Attributes:
        keys (Tensor): (B, K, key_channels, h, w).
        values (Tensor): (B, K, Cv, h, w).
        count (Tensor): int64 scalar (0-dim): frames seen, at most ``K``.
    """
    keys: Tensor
    values: Tensor
    count: Tensor

    @property
    def num_frames(self) -> int:
        """int: Frames held (``count``; reads the tensor)."""
        return int(self.count)


#: What :meth:`VideoEncoderDecoder.step` takes and returns as memory: one
#: StreamMemory (``whole`` mode) or one per window (``slide`` mode).
StepMemory = Union[StreamMemory, Tuple[Optional[StreamMemory], ...]]


def parse_memory_offsets(offsets, where: str) -> Tuple[int, ...]:
    """Check memory offsets: distinct negative ints, oldest first.

    Args:
        offsets (Sequence[int]): Offsets of the memory frames relative to
            the current frame, e.g. ``(-9, -6, -3)``.
        where (str): What to name in the error (e.g. the argument).

    Returns:
        tuple[int]: The offsets as a tuple.

    Raises:
        ValueError: ``offsets`` is empty, holds something other than
            negative ints, or is not strictly increasing.
    """
    if isinstance(offsets, (str, bytes)) or not isinstance(
            offsets, Sequence):
        raise ValueError(f'{where} must be a sequence of negative ints, '
                         f'oldest first, e.g. (-9, -6, -3); got {offsets!r}')
    offsets = tuple(offsets)
    if not offsets or any(
            isinstance(o, bool) or not isinstance(o, int) or o >= 0
            for o in offsets):
        raise ValueError(f'{where} must hold at least one negative int '
                         f'(frames before the current one), got {offsets!r}')
    if any(a >= b for a, b in zip(offsets, offsets[1:])):
        raise ValueError(f'{where} must be distinct and oldest first '
                         f'(increasing), e.g. (-9, -6, -3); got {offsets!r}')
    return offsets


@MODELS.register_module()
class VideoEncoderDecoder(EncoderDecoder):
    """Encoder-decoder with a memory neck (Local Memory Attention).

    Inputs are clips ``(B, T+1, 3, H, W)`` with the key (annotated /
    current) frame LAST, or single frames ``(B, 3, H, W)`` (empty memory).
    The backbone encodes every frame; the neck (e.g.
    :class:`~lma_mmseg.models.necks.LocalMemoryNeck`) turns the memory
    frames' features into keys and values, reads them from the key frame and
    fuses the read-out into the key frame's features; the decode and
    auxiliary heads run on the key frame only, so losses, predictions and
    metainfo are those of the key frame.

    .. code:: text

     extract_feat(): encode_frames(memory frames, one batched call)
                     -> neck.encode_memory() -> neck.push_memory()
                     encode_frames(key frame) -> neck(key feats, memory)
     loss(): extract_feat() -> decode_head.loss() (+ auxiliary heads,
             + memory_head.loss() on the neck's read-out)
     predict(): whole / slide inference (the same windows cut from every
                frame) -> postprocess_result()
     step(frame, memory): encode_frames(frame) -> neck.encode_memory()
                -> neck(feats, frames of memory at memory_offsets, valid)
                -> decode_head.predict(); push the frame's key and value
                into the StreamMemory (the newest max|offset| frames)
     _forward(): extract_feat() -> decode_head.forward()

    :meth:`step` is the per-frame (streaming) step: each frame is encoded
    once; the keys and values of the newest ``max(|offset|)`` frames are
    carried from call to call (:class:`StreamMemory`) and the frames at
    ``memory_offsets`` are read. Streaming inference, speed and FLOP
    measurements and export all run it.

    Args:
        backbone (dict): Backbone config.
        decode_head (dict): Decode head config.
        neck (dict): Memory neck config; the neck must provide
            ``encode_memory(feats) -> (keys, values)``,
            ``push_memory(memory, keys, values, max_length)``,
            ``forward(feats, memory=None, valid=None)`` and
            ``memory_length``. When the config leaves ``memory_length`` out
            it is set to ``len(memory_offsets)``.
        memory_offsets (Sequence[int], optional): Where the memory frames
            of a streamed frame are, relative to it, oldest first: distinct
            negative ints, e.g. ``(-9, -6, -3)`` (CFFM's strided offsets
            on VSPW). The training and test clips should hold the frames at
            the same offsets (the datasets' ``frame_offsets``;
            :func:`lma_mmseg.apis.check_memory_offsets` checks the test
            set). Streaming keeps ``max(|offset|)`` frames and reads
            ``len(memory_offsets)``, which must equal the neck's
            ``memory_length`` (the position bias has one row per memory
            frame). None reads the previous ``memory_length`` frames,
            ``(-T, ..., -1)``. Defaults to None.
        freeze_memory_encoder (bool): Run the backbone on memory frames under
            ``torch.no_grad()`` (no gradient flows through past frames into
            the backbone; a backbone in train mode still updates its BN
            statistics with them). Defaults to True.
        freeze (Sequence[str], optional): Names of submodules (e.g.
            ``('backbone', 'decode_head')``; dotted names reach deeper) whose
            parameters get ``requires_grad=False``. None trains everything.
            Defaults to None.
        freeze_mode (str): How the modules in ``freeze`` behave in
            training. ``'eval'``: they stay in eval mode (BN uses and keeps
            its running statistics, dropout is off). ``'train'``: they follow
            the model's train/eval mode like every other module (BN
            normalises with batch statistics and updates its running
            statistics, dropout is active), as in the authors' LMA training
            code; they still get no gradient. A frozen backbone in train mode
            encodes the memory frames and the key frame in separate calls
            during training (each with its own batch statistics); in eval
            mode all frames share one call. Defaults to ``'eval'``.
        memory_encoder_mode (str): How the backbone encodes the memory
            frames while the model trains. ``'follow'``: in the backbone's
            own mode (a backbone in train mode normalises them with their
            batch statistics and updates its BN running statistics with
            them). ``'eval'``: in eval mode, as streaming inference encodes
            every frame (BN running statistics, no dropout), so training
            reads the memory features inference will read, and only the key
            frames update the BN statistics. Use ``'eval'`` when the
            backbone trains and the key frames differ in statistics from
            the memory frames (a degraded current frame): with
            ``'follow'`` the running statistics mix both kinds while each
            training batch is normalised with one. Only matters for a
            backbone in train mode. Defaults to ``'follow'``.
        backbone_norm_eval (bool): Keep the backbone's BN layers in eval
            mode while the model trains (as ``norm_eval=True`` of mmseg's
            ResNet): every frame, key and memory, is normalised with the
            running statistics the model starts from and those are not
            updated; the BN weights and biases still train. With a training
            backbone whose key frames differ in statistics from the memory
            frames (a degraded current frame), the running statistics then
            stay those of the frames the memory holds, instead of drifting
            to the key frames' and normalising the memory frames with them
            at inference. Defaults to False.
        memory_norm_stats (str): The BN running statistics the backbone
            normalises the memory frames with. ``'shared'``: the backbone's
            own, as for the key frame (each frame is encoded once when
            streaming). ``'start'``: those the model starts training from,
            kept in the model (``memory_norm``) and never updated, while the
            key frame's statistics follow the data the model is fine-tuned
            on: a checkpoint without them (e.g. the single-frame model's, by
            ``load_from``) gives its backbone's when it is loaded; without
            any checkpoint, the backbone's when the model is first set to
            train mode. Where the current frame is systematically degraded
            (e.g. under-exposed) and the memory frames are not, each side is
            normalised with statistics of its own kind. Memory frames are
            then always encoded in eval mode, and a streamed frame goes
            through the backbone twice (once for its prediction, once for
            the memory). Defaults to ``'shared'``.
        memory_head (dict, optional): A decode head (e.g. mmseg's
            ``FCNHead``) trained on the neck's memory read-out alone, for
            its loss only (``mem.``-prefixed; it takes no part in inference,
            streaming or export): the memory heads and the attention are
            asked for a read-out that predicts the key frame's labels by
            itself, so the fusion gets one worth leaning on where the key
            frame is degraded. Clips only (a lone frame has no read-out).
            ``in_channels`` (the neck's value width) and ``num_classes``
            (the decode head's) are filled in when left out. The neck must
            take ``forward(..., return_readout=True)``, as
            ``LocalMemoryNeck`` does. Defaults to None.
        **kwargs: The other arguments of mmseg's ``EncoderDecoder``, passed
            on: ``auxiliary_head``, ``train_cfg``, ``test_cfg``
            (``mode='whole'`` or ``mode='slide'`` with ``crop_size`` and
            ``stride``), ``data_preprocessor`` (e.g.
            ``VideoSegDataPreProcessor``), ``pretrained``, ``init_cfg``.
    """

    def __init__(self,
                 backbone: ConfigType,
                 decode_head: ConfigType,
                 neck: ConfigType,
                 memory_offsets: Optional[Sequence[int]] = None,
                 freeze_memory_encoder: bool = True,
                 freeze: Optional[Sequence[str]] = None,
                 freeze_mode: str = 'eval',
                 memory_encoder_mode: str = 'follow',
                 backbone_norm_eval: bool = False,
                 memory_norm_stats: str = 'shared',
                 memory_head: Optional[ConfigType] = None,
                 **kwargs):
        if freeze_mode not in ('eval', 'train'):
            raise ValueError(f'{type(self).__name__}: `freeze_mode` must be '
                             f"'eval' or 'train', got {freeze_mode!r}")
        if memory_encoder_mode not in ('follow', 'eval'):
            raise ValueError(
                f'{type(self).__name__}: `memory_encoder_mode` must be '
                f"'follow' or 'eval', got {memory_encoder_mode!r}")
        if not isinstance(backbone_norm_eval, bool):
            raise ValueError(
                f'{type(self).__name__}: `backbone_norm_eval` must be a '
                f'bool, got {backbone_norm_eval!r}')
        if memory_norm_stats not in ('shared', 'start'):
            raise ValueError(
                f'{type(self).__name__}: `memory_norm_stats` must be '
                f"'shared' or 'start', got {memory_norm_stats!r}")
        if neck is None:
            raise ValueError(f'{type(self).__name__}: `neck` must be a '
                             f'memory neck config such as '
                             f"dict(type='LocalMemoryNeck', ...), got None")
        name = type(self).__name__
        if memory_offsets is not None:
            memory_offsets = parse_memory_offsets(
                memory_offsets, f'{name}: `memory_offsets`')
            if hasattr(neck, 'get') and neck.get('memory_length') is None:
                neck = dict(neck, memory_length=len(memory_offsets))
        super().__init__(
            backbone=backbone, decode_head=decode_head, neck=neck, **kwargs)
        for method in ('encode_memory', 'push_memory', 'forward'):
            if not callable(getattr(self.neck, method, None)):
                raise ValueError(
                    f'{name}: the neck '
                    f'{type(self.neck).__name__} has no `{method}` method; '
                    f'use a memory neck such as LocalMemoryNeck')
        length = int(self.neck.memory_length)
        if memory_offsets is None:
            memory_offsets = tuple(range(-length, 0))
        elif len(memory_offsets) != length:
            raise ValueError(
                f'{name}: memory_offsets={memory_offsets} reads '
                f'{len(memory_offsets)} memory frames but the neck has '
                f'memory_length={length} (one position-bias row per memory '
                f'frame); set model.neck.memory_length='
                f'{len(memory_offsets)} or leave it out')
        self.memory_offsets = memory_offsets
        self.freeze_memory_encoder = bool(freeze_memory_encoder)
        self.freeze_mode = freeze_mode
        self.memory_encoder_mode = memory_encoder_mode
        self.backbone_norm_eval = backbone_norm_eval
        self.memory_norm_stats = memory_norm_stats
        if memory_norm_stats == 'start':
            if backbone_norm_eval:
                raise ValueError(
                    f"{name}: memory_norm_stats='start' keeps separate "
                    f'statistics for the memory frames, but with '
                    f'backbone_norm_eval=True the key frame keeps the '
                    f'starting ones too; use one of them')
            self.memory_norm = _MemoryNormStats(self.backbone, name)
            self.register_load_state_dict_pre_hook(
                _fill_memory_norm_stats)
        self.memory_head = self._build_memory_head(memory_head)
        self.freeze = self._freeze(freeze)

    def _build_memory_head(self,
                           cfg: Optional[ConfigType]) -> Optional[nn.Module]:
        """Build ``memory_head`` with the neck's value width and the decode
        head's classes (where its config leaves them out)."""
        if cfg is None:
            return None
        name = type(self).__name__
        if not hasattr(cfg, 'get') or 'type' not in cfg:
            raise ValueError(f'{name}: `memory_head` must be a decode head '
                             f'config with a `type`, e.g. '
                             f"dict(type='FCNHead', channels=64, "
                             f'num_convs=1), got {cfg!r}')
        try:
            takes_readout = 'return_readout' in inspect.signature(
                self.neck.forward).parameters
        except (TypeError, ValueError):
            takes_readout = False
        if not takes_readout:
            raise ValueError(
                f'{name}: `memory_head` is trained on the memory read-out, '
                f'but the neck {type(self.neck).__name__} does not return '
                f'it (forward(..., return_readout=True)); use '
                f'LocalMemoryNeck or leave memory_head out')
        channels = getattr(self.neck, 'out_value_channels', None)
        if channels is None and cfg.get('in_channels') is None:
            raise ValueError(
                f'{name}: `memory_head` needs `in_channels` (the width of '
                f'the memory read-out): the neck '
                f'{type(self.neck).__name__} does not say it '
                f'(out_value_channels)')
        cfg = dict(cfg)
        cfg.setdefault('in_channels', channels)
        cfg.setdefault('num_classes', self.decode_head.num_classes)
        cfg.setdefault('align_corners', self.align_corners)
        return MODELS.build(cfg)

    # ------------------------------------------------------------ freezing
    def _freeze(self, names: Optional[Sequence[str]]) -> Tuple[str, ...]:
        """Check the names in ``freeze`` and stop their gradients."""
        if names is None:
            return ()
        if isinstance(names, str):
            names = (names, )
        names = tuple(names)
        for name in names:
            try:
                module = self.get_submodule(name)
            except (AttributeError, TypeError):
                module = None
            if module is None:
                children = ', '.join(n for n, _ in self.named_children())
                raise ValueError(
                    f'{type(self).__name__}: `freeze` names an unknown '
                    f'submodule {name!r}; top-level submodules are: '
                    f'{children}')
            for param in module.parameters():
                param.requires_grad_(False)
        return names

    def train(self, mode: bool = True) -> 'VideoEncoderDecoder':
        """Set train/eval mode; with ``freeze_mode='eval'`` the modules in
        ``freeze`` stay in eval mode, with ``backbone_norm_eval`` the
        backbone's BN layers."""
        super().train(mode)
        if getattr(self, 'freeze_mode', 'eval') == 'eval':
            for name in getattr(self, 'freeze', ()):
                self.get_submodule(name).eval()
        if getattr(self, 'backbone_norm_eval', False):
            for module in self.backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        if mode and self._separate_memory_norm:
            # no checkpoint gave the memory's statistics: those of now
            self.memory_norm.keep(self.backbone)
        return self

    @property
    def _separate_memory_norm(self) -> bool:
        """Whether the memory frames have BN statistics of their own
        (``memory_norm_stats='start'``)."""
        return getattr(self, 'memory_norm_stats', 'shared') == 'start'

    def _backbone_is_fixed(self) -> bool:
        """Whether the backbone is in eval mode and gets no gradient here
        (frozen, or grad disabled), so all frames can share one call."""
        if self.backbone.training:
            return False
        return not torch.is_grad_enabled() or not any(
            p.requires_grad for p in self.backbone.parameters())

    # ---------------------------------------------------------- features
    def _check_inputs(self, inputs: Tensor) -> None:
        if not isinstance(inputs, Tensor) or inputs.dim() not in (4, 5):
            shape = tuple(inputs.shape) if isinstance(inputs,
                                                      Tensor) else None
            raise ValueError(
                f'{type(self).__name__}: `inputs` must be a clip (B, T+1, '
                f'C, H, W) with the key frame last or a batch of frames '
                f'(B, C, H, W), got {shape or type(inputs).__name__}')

    @property
    def memory_length(self) -> int:
        """int: Memory frames ``T`` read per frame: ``len(memory_offsets)``,
        the neck's ``memory_length``."""
        return len(self.memory_offsets)

    @property
    def memory_span(self) -> int:
        """int: Frames ``K = max(|offset|)`` the streaming memory keeps."""
        return -self.memory_offsets[0]

    def encode_frames(self, frames: Tensor) -> Features:
        """Run the backbone on a batch of frames: the one place where a
        frame is encoded.

        Args:
            frames (Tensor): Frames (N, C, H, W).

        Returns:
            Tensor | tuple[Tensor]: The backbone output for the N frames.
        """
        return self.backbone(frames)

    def encode_memory_frames(self, frames: Tensor) -> Features:
        """Run the backbone on frames that go into the memory: as
        :meth:`encode_frames`, with the memory's BN statistics where
        ``memory_norm_stats='start'`` (the backbone must be in eval mode
        then, or BN would update them).

        Args:
            frames (Tensor): Frames (N, C, H, W).

        Returns:
            Tensor | tuple[Tensor]: The backbone output for the N frames.
        """
        if not self._separate_memory_norm:
            return self.encode_frames(frames)
        if torch.jit.is_tracing():
            # torch.jit.trace (e.g. mmengine's FLOP counter) refuses
            # functional_call: the statistics go in place for the call
            with _buffers_swapped(self.backbone, self.memory_norm.stats()):
                return self.encode_frames(frames)
        return functional_call(
            self.backbone, self.memory_norm.stats(), (frames, ),
            strict=False)

    def _memory_of(self, feats: Features, batch: int,
                   num: int) -> FrameMemory:
        """Memory of ``num`` frames per clip from their backbone output
        (``batch * num`` frames, clip-major)."""
        keys, values = self.neck.encode_memory(feats)
        return self.neck.push_memory(None, keys.unflatten(0, (batch, num)),
                                     values.unflatten(0, (batch, num)))

    def encode_memory(self, frames: Tensor) -> FrameMemory:
        """Encode memory frames into keys and values.

        Args:
            frames (Tensor): Memory frames (B, T, C, H, W), oldest first.

        Returns:
            FrameMemory: Keys (B, T, Ck, h, w) and values (B, T, Cv, h, w).
            The backbone runs once on all B*T frames, under
            ``torch.no_grad()`` when ``freeze_memory_encoder``; with
            ``freeze_mode='train'`` and a backbone in train mode it runs
            once per frame time (B frames each), as the authors' code does,
            so that BN batch statistics are those of one frame. With
            ``memory_encoder_mode='eval'`` the backbone runs in eval mode.
        """
        batch, num = frames.shape[:2]
        separate = self._separate_memory_norm
        with torch.set_grad_enabled(torch.is_grad_enabled()
                                    and not self.freeze_memory_encoder), \
                _eval_mode(self.backbone,
                           self.memory_encoder_mode == 'eval' or separate):
            if separate:
                feats = self.encode_memory_frames(frames.flatten(0, 1))
            elif self.freeze_mode == 'train' and self.backbone.training:
                # As the authors' code: one backbone call per memory frame,
                # so train-mode BN sees the statistics of one frame time.
                per_frame = [
                    self.encode_frames(frames[:, t]) for t in range(num)
                ]
                feats = _stack_frames(per_frame)
            else:
                feats = self.encode_frames(frames.flatten(0, 1))
        return self._memory_of(feats, batch, num)

    def extract_feat(self, inputs: Tensor) -> Features:
        """Features of the key frame after the memory neck.

        Args:
            inputs (Tensor): Clip (B, T+1, C, H, W), key frame last, or
                frames (B, C, H, W) (empty memory).

        Returns:
            list[Tensor] | tuple[Tensor]: The backbone outputs of the key
            frame with the neck's map fused with the memory.
        """
        return self._extract(inputs)

    def _extract(self, inputs: Tensor, return_readout: bool = False):
        """:meth:`extract_feat`; with ``return_readout`` also the neck's
        memory read-out (None for a lone frame)."""
        self._check_inputs(inputs)
        kwargs = dict(return_readout=True) if return_readout else {}
        if inputs.dim() == 4:
            return self.neck(
                self.encode_frames(inputs), memory=None, **kwargs)
        batch, num = inputs.shape[:2]
        if num == 1:
            return self.neck(
                self.encode_frames(inputs[:, 0]), memory=None, **kwargs)
        if self._backbone_is_fixed() and not self._separate_memory_norm:
            # Eval-mode backbone without gradients: one call for all frames.
            with torch.no_grad():
                feats = self.encode_frames(inputs.flatten(0, 1))
            single = isinstance(feats, Tensor)
            feats = [f.unflatten(0, (batch, num)) for f in
                     ((feats, ) if single else feats)]
            mem_feats = [f[:, :-1].flatten(0, 1) for f in feats]
            key_feats = [f[:, -1] for f in feats]
            if single:  # keep the backbone's output type
                mem_feats, key_feats = mem_feats[0], key_feats[0]
            memory = self._memory_of(mem_feats, batch, num - 1)
        else:
            memory = self.encode_memory(inputs[:, :-1])
            key_feats = self.encode_frames(inputs[:, -1])
        return self.neck(key_feats, memory=memory, **kwargs)

    def loss(self, inputs: Tensor, data_samples: SampleList) -> dict:
        """mmseg's losses (decode and auxiliary heads) of the key frames,
        and with ``memory_head`` its loss on the memory read-out
        (``mem.``-prefixed)."""
        if self.memory_head is None:
            return super().loss(inputs, data_samples)
        x, readout = self._extract(inputs, return_readout=True)
        losses = self._decode_head_forward_train(x, data_samples)
        if self.with_auxiliary_head:
            losses.update(self._auxiliary_head_forward_train(x, data_samples))
        if readout is not None:
            loss = self.memory_head.loss([readout], data_samples,
                                         self.train_cfg)
            losses.update({f'mem.{k}': v for k, v in loss.items()})
        return losses

    # ---------------------------------------------------------- streaming
    def step(self,
             inputs: Tensor,
             memory: Optional[StepMemory] = None,
             batch_img_metas: Optional[List[dict]] = None,
             memory_offsets: Optional[Sequence[int]] = None
             ) -> Tuple[Tensor, StepMemory]:
        """Segment the next frame of a stream, encoding it once.

        The frame goes through the backbone once and its memory key and
        value are computed; the neck reads the frames of ``memory`` at
        ``memory_offsets`` (those that exist: at the start of a stream the
        others are left out of the attention, and with none the neck
        follows its ``empty_memory``) and fuses the read-out into the
        frame's features; the decode head predicts; the frame's key and
        value are pushed into the memory, which keeps the newest
        ``K = max(|offset|)`` frames. The logits of frame ``t`` equal the
        clip-mode :meth:`predict` on the frames ``t + offset`` that exist,
        then frame ``t``.

        The memory has one shape from the first frame on (a
        :class:`StreamMemory`: zero keys and values and ``count=0`` when
        ``memory`` is None), so the same computation runs on every frame:
        a compiled step compiles once (start it from :meth:`empty_memory`)
        and an exported step is this step.

        ``test_cfg.mode='slide'`` cuts the same windows as
        :meth:`slide_inference` and keeps one memory per window.

        Args:
            inputs (Tensor): The frame (B, 3, H, W), preprocessed as the
                data preprocessor does (B streams in lockstep).
            memory (StreamMemory | tuple[StreamMemory], optional): What the
                previous step returned (or :meth:`empty_memory`); None for
                an empty memory (first frame, lone image).
            batch_img_metas (list[dict], optional): Metainfo of the frames;
                defaults to the input size.
            memory_offsets (Sequence[int], optional): The offsets to read;
                defaults to :attr:`memory_offsets`. A memory keeps
                ``max(|offset|)`` frames, so the offsets of one stream must
                not change.

        Returns:
            tuple: Logits (B, num_classes, H, W) at the input size, as
            :meth:`encode_decode` returns them, and the new memory: a
            :class:`StreamMemory` (keys (B, K, Ck, h, w), values
            (B, K, Cv, h, w), oldest first, and the count) in ``whole``
            mode, a tuple of them (one per window) in ``slide`` mode.
        """
        name = f'{type(self).__name__}.step'
        if not isinstance(inputs, Tensor) or inputs.dim() != 4:
            raise ValueError(
                f'{name}: `inputs` must be one frame per stream '
                f'(B, C, H, W), got '
                f'{tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__}'  # noqa: E501
            )
        if memory_offsets is None:
            memory_offsets = self.memory_offsets
        else:
            memory_offsets = parse_memory_offsets(memory_offsets,
                                                  f'{name}: `memory_offsets`')
        if batch_img_metas is None:
            batch_img_metas = self._default_metas(inputs)
        else:
            batch_img_metas = [dict(meta) for meta in batch_img_metas]
        mode = self.test_cfg.get('mode', 'whole') if self.test_cfg else \
            'whole'
        if mode == 'whole':
            return self._step_frame(inputs, memory, batch_img_metas,
                                    memory_offsets)
        if mode != 'slide':
            raise ValueError(f"{type(self).__name__}: test_cfg.mode must be "
                             f"'whole' or 'slide', got {mode!r}")
        windows = self.slide_windows(inputs.shape[-2:])
        if memory is None:
            memory = (None, ) * len(windows)
        elif (not isinstance(memory, (tuple, list))
              or len(memory) != len(windows)
              or isinstance(memory, StreamMemory)):
            raise ValueError(
                f'{name}: in slide mode `memory` must '
                f'hold one memory per window ({len(windows)} windows for '
                f'input size {tuple(inputs.shape[-2:])}), got '
                f'{type(memory).__name__} of length '
                f'{len(memory) if isinstance(memory, (tuple, list)) else 0}')
        new_memory = [None] * len(windows)

        def window_step(crop, metas, index):
            logits, new_memory[index] = self._step_frame(
                crop, memory[index], metas, memory_offsets)
            return logits

        logits = self._slide(inputs, batch_img_metas, window_step)
        return logits, tuple(new_memory)

    @torch.no_grad()
    def empty_memory(self,
                     inputs: Tensor,
                     memory_offsets: Optional[Sequence[int]] = None
                     ) -> StepMemory:
        """The memory a stream of frames like ``inputs`` starts from.

        Zero keys and values of ``max(|offset|)`` frames and ``count=0``
        (one per window in ``slide`` mode), shaped as :meth:`step` returns
        them: ``step(frame, empty_memory(frame))`` equals
        ``step(frame, None)``. A compiled step started from it sees the same
        input structure on every frame and compiles once. The shapes are
        learned by running :meth:`step` once on ``inputs`` (nothing of it
        is kept).

        Args:
            inputs (Tensor): A frame (B, 3, H, W) of the stream.
            memory_offsets (Sequence[int], optional): As for :meth:`step`.

        Returns:
            StreamMemory | tuple[StreamMemory]: The empty memory.
        """
        _, memory = self.step(inputs, None, memory_offsets=memory_offsets)
        return tree_map(torch.zeros_like, memory)

    def _check_stream_memory(self, memory, keys: Tensor, values: Tensor,
                             span: int) -> None:
        """Check a memory passed to :meth:`step` against the frame's own
        keys (B, Ck, h, w) and values (B, Cv, h, w)."""
        name = f'{type(self).__name__}.step'
        if not isinstance(memory, StreamMemory):
            raise ValueError(
                f'{name}: `memory` must be the StreamMemory (keys, values, '
                f'count) that the previous step or empty_memory() returned, '
                f'or None; got {type(memory).__name__}')
        for field, new in (('keys', keys), ('values', values)):
            buffer = getattr(memory, field)
            if (not isinstance(buffer, Tensor) or buffer.dim() != 5
                    or buffer.shape[0] != new.shape[0]
                    or buffer.shape[2:] != new.shape[1:]
                    or buffer.shape[1] < span):
                raise ValueError(
                    f'{name}: memory {field} must have shape (B={new.shape[0]}'
                    f', K>={span}, {", ".join(map(str, new.shape[1:]))}) for '
                    f'this frame and offsets reaching back {span} frames, got '
                    f'{tuple(getattr(buffer, "shape", ()))}; call reset() '
                    f'(or pass None) before a new video')
        count = memory.count
        if (not isinstance(count, Tensor) or count.dim() != 0
                or count.dtype != torch.int64):
            raise ValueError(
                f'{name}: memory count must be an int64 scalar tensor, got '
                f'{getattr(count, "dtype", type(count).__name__)} of shape '
                f'{tuple(getattr(count, "shape", ()))}')

    def _step_frame(self, inputs: Tensor, memory: Optional[StreamMemory],
                    batch_img_metas: List[dict],
                    memory_offsets: Tuple[int, ...]
                    ) -> Tuple[Tensor, StreamMemory]:
        """One step on a whole frame (or one window of it)."""
        feats = self.encode_frames(inputs)
        if self._separate_memory_norm:
            # the memory's own BN statistics: a second backbone pass
            with _eval_mode(self.backbone):
                keys, values = self.neck.encode_memory(
                    self.encode_memory_frames(inputs))
        else:
            keys, values = self.neck.encode_memory(feats)
        span = -memory_offsets[0]
        if memory is None:
            batch = keys.shape[0]
            memory = StreamMemory(
                keys.new_zeros((batch, span, *keys.shape[1:])),
                values.new_zeros((batch, span, *values.shape[1:])),
                torch.zeros((), dtype=torch.int64, device=keys.device))
        else:
            self._check_stream_memory(memory, keys, values, span)
        size = memory.keys.shape[1]
        # frame t + offset exists once -offset frames were seen
        distances = torch.tensor([-o for o in memory_offsets],
                                 device=memory.count.device)
        valid = memory.count >= distances
        read = FrameMemory(
            _frames_at(memory.keys, memory_offsets),
            _frames_at(memory.values, memory_offsets))
        fused = self.neck(feats, memory=read, valid=valid)
        logits = self.decode_head.predict(fused, batch_img_metas,
                                          self.test_cfg)
        memory = StreamMemory(
            torch.cat([memory.keys[:, 1:],
                       keys[:, None].to(memory.keys.dtype)], dim=1),
            torch.cat([memory.values[:, 1:],
                       values[:, None].to(memory.values.dtype)], dim=1),
            torch.clamp(memory.count + 1, max=size))
        return logits, memory

    # ---------------------------------------------------------- inference
    @staticmethod
    def _default_metas(inputs: Tensor) -> List[dict]:
        shape = tuple(inputs.shape[-2:])
        return [
            dict(
                ori_shape=shape,
                img_shape=shape,
                pad_shape=shape,
                padding_size=[0, 0, 0, 0]) for _ in range(inputs.shape[0])
        ]

    def predict(self,
                inputs: Tensor,
                data_samples: OptSampleList = None) -> SampleList:
        """Predict the key frames of a batch of clips (or frames).

        Args:
            inputs (Tensor): Clip (B, T+1, C, H, W), key frame last, or
                frames (B, C, H, W).
            data_samples (list[SegDataSample], optional): Data samples with
                the key frames' metainfo.

        Returns:
            list[SegDataSample]: ``pred_sem_seg`` and ``seg_logits`` of the
            key frames, resized to ``ori_shape``.
        """
        self._check_inputs(inputs)
        if data_samples is not None:
            batch_img_metas = [ds.metainfo for ds in data_samples]
        else:
            batch_img_metas = self._default_metas(inputs)
        seg_logits = self.inference(inputs, batch_img_metas)
        return self.postprocess_result(seg_logits, data_samples)

    def slide_windows(self, size: Sequence[int]
                      ) -> List[Tuple[int, int, int, int]]:
        """Windows ``(y1, y2, x1, x2)`` of sliding-window inference on an
        input of ``size`` (H, W), from ``test_cfg.crop_size`` and
        ``test_cfg.stride``."""
        h_stride, w_stride = self.test_cfg.stride
        h_crop, w_crop = self.test_cfg.crop_size
        return slide_windows(int(size[0]), int(size[1]), h_crop, w_crop,
                             h_stride, w_stride)

    def _slide(self, inputs: Tensor, batch_img_metas: List[dict],
               window_fn: Callable[[Tensor, List[dict], int],
                                   Tensor]) -> Tensor:
        """Sliding-window inference: ``window_fn(crop, metas, index)`` gives
        the logits of window ``index``; overlaps are averaged."""
        batch_size = inputs.shape[0]
        h_img, w_img = inputs.shape[-2:]
        preds = inputs.new_zeros((batch_size, self.out_channels, h_img,
                                  w_img))
        count_mat = inputs.new_zeros((batch_size, 1, h_img, w_img))
        for index, (y1, y2, x1, x2) in enumerate(
                self.slide_windows((h_img, w_img))):
            crop = inputs[..., y1:y2, x1:x2]
            batch_img_metas[0]['img_shape'] = crop.shape[-2:]
            crop_logits = window_fn(crop, batch_img_metas, index)
            preds += F.pad(crop_logits,
                           (int(x1), int(w_img - x2), int(y1),
                            int(h_img - y2)))
            count_mat[:, :, y1:y2, x1:x2] += 1
        return preds / count_mat

    def slide_inference(self, inputs: Tensor,
                        batch_img_metas: List[dict]) -> Tensor:
        """Sliding-window inference; the same windows are cut from every
        frame of the clip.

        Args:
            inputs (Tensor): Clip (B, T+1, C, H, W) or frames (B, C, H, W).
            batch_img_metas (list[dict]): Metainfo of the key frames.

        Returns:
            Tensor: Logits of the key frames (B, num_classes, H, W).
        """
        return self._slide(
            inputs, batch_img_metas,
            lambda crop, metas, _: self.encode_decode(crop, metas))

    def _forward(self,
                 inputs: Tensor,
                 data_samples: OptSampleList = None) -> Tensor:
        """Network forward without post-processing (e.g. FLOP counting).

        Args:
            inputs (Tensor): Clip (B, T+1, C, H, W) or frames (B, C, H, W).

        Returns:
            Tensor: Decode head output for the key frames.
        """
        return self.decode_head.forward(self.extract_feat(inputs))


class _MemoryNormStats(nn.Module):
    """The BN running statistics the memory frames are normalised with
    (``memory_norm_stats='start'``): a copy of those of the backbone's BN
    layers, named after them (dots as ``__``), and whether they are set
    (``loaded``: by a checkpoint, or taken from the backbone by
    :meth:`keep`)."""

    def __init__(self, backbone: nn.Module, owner: str):
        super().__init__()
        self.names = [
            name for name, module in backbone.named_modules()
            if isinstance(module, _BatchNorm) and module.track_running_stats
        ]
        for src, own in self.pairs():
            self.register_buffer(
                own, backbone.get_buffer(src).detach().clone())
        if not self.names:
            raise ValueError(
                f"{owner}: memory_norm_stats='start' needs a backbone with "
                f'BN layers that track running statistics; '
                f'{type(backbone).__name__} has none')
        self.register_buffer('loaded', torch.tensor(False))
        # the flag as a Python bool, so that checking it needs no tensor
        # read (none in a compiled or exported graph)
        self.ready = False

    def pairs(self) -> List[Tuple[str, str]]:
        """(backbone buffer name, own buffer name) of every statistic."""
        return [(f'{name}.running_{stat}',
                 f'{name.replace(".", "__")}__{stat}')
                for name in self.names for stat in ('mean', 'var')]

    def stats(self) -> dict:
        """The statistics as ``functional_call`` takes them: backbone
        buffer names -> tensors."""
        return {src: getattr(self, own) for src, own in self.pairs()}

    @torch.no_grad()
    def keep(self, backbone: nn.Module) -> None:
        """Take the backbone's statistics of now, unless they are set."""
        if self.ready:
            return
        for name, value in self.stats().items():
            value.copy_(backbone.get_buffer(name))
        self.loaded.fill_(True)
        self.ready = True


def _fill_memory_norm_stats(module: 'VideoEncoderDecoder', state_dict: dict,
                            prefix: str, *args) -> None:
    """Load-state-dict pre-hook: a checkpoint without the memory's BN
    statistics (a single-frame model's) gives them its backbone's."""
    norm = module.memory_norm
    ready = f'{prefix}memory_norm.loaded'
    if ready in state_dict:
        norm.ready = bool(state_dict[ready])
        return
    pairs = norm.pairs()
    filled = 0
    for src, own in pairs:
        src = f'{prefix}backbone.{src}'
        dst = f'{prefix}memory_norm.{own}'
        if dst not in state_dict and src in state_dict:
            state_dict[dst] = state_dict[src].detach().clone()
            filled += 1
    if filled == len(pairs):
        state_dict[ready] = torch.tensor(True)
        norm.ready = True


@contextmanager
def _buffers_swapped(module: nn.Module, buffers: dict) -> Iterator[None]:
    """Put ``buffers`` (dotted names -> tensors) in place of the module's
    own for the block."""
    saved = []
    try:
        for name, value in buffers.items():
            owner, _, attr = name.rpartition('.')
            sub = module.get_submodule(owner)
            saved.append((sub, attr, getattr(sub, attr)))
            setattr(sub, attr, value)
        yield
    finally:
        for sub, attr, value in reversed(saved):
            setattr(sub, attr, value)


@contextmanager
def _eval_mode(module: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Run ``module`` in eval mode inside the block; every submodule gets
    its own mode back on exit."""
    if not enabled or not module.training:
        yield
        return
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _frames_at(buffer: Tensor, offsets: Sequence[int]) -> Tensor:
    """Frames of a buffer (B, K, ...) whose slot ``K - 1`` is the previous
    frame, at ``offsets`` (negative): (B, len(offsets), ...)."""
    size = buffer.shape[1]
    index = [size + o for o in offsets]
    if index == list(range(index[0], index[-1] + 1)):  # a view
        return buffer[:, index[0]:index[-1] + 1]
    return buffer[:, index]


def _stack_frames(per_frame: List[Features]) -> Features:
    """Backbone outputs of T calls on (B, ...) frames -> one output of
    B*T frames, clip-major (as a call on ``frames.flatten(0, 1)``)."""
    if isinstance(per_frame[0], Tensor):
        return torch.stack(per_frame, dim=1).flatten(0, 1)
    return type(per_frame[0])(
        torch.stack(maps, dim=1).flatten(0, 1) for maps in zip(*per_frame))


def is_memory_model(model) -> bool:
    """Whether a segmentor keeps a memory of past frames (runs
    :meth:`VideoEncoderDecoder.step`): the one check used everywhere.

    Args:
        model (nn.Module | dict): A built segmentor (model wrappers are
            unwrapped) or a ``model`` config dict.

    Returns:
        bool: True for a :class:`VideoEncoderDecoder` (or subclass).
    """
    if isinstance(model, nn.Module):
        model = getattr(model, 'module', model)
        return isinstance(model, VideoEncoderDecoder)
    if hasattr(model, 'get'):
        kind = model.get('type')
        if isinstance(kind, str):
            kind = MODELS.get(kind)
        return isinstance(kind, type) and issubclass(kind,
                                                     VideoEncoderDecoder)
    raise TypeError(f'is_memory_model: expected a segmentor or a model '
                    f'config dict, got {type(model).__name__}')


def slide_windows(h_img: int, w_img: int, h_crop: int, w_crop: int,
                  h_stride: int,
                  w_stride: int) -> List[Tuple[int, int, int, int]]:
    """Windows ``(y1, y2, x1, x2)`` of mmseg's sliding-window inference."""
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    windows = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1 = h_idx * h_stride
            x1 = w_idx * w_stride
            y2 = min(y1 + h_crop, h_img)
            x2 = min(x1 + w_crop, w_img)
            y1 = max(y2 - h_crop, 0)
            x1 = max(x2 - w_crop, 0)
            windows.append((y1, y2, x1, x2))
    return windows
