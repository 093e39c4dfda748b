"""Parameters and FLOPs per frame: the one FLOP counter of the project.

Every count traces what runs at inference: ``model.step`` (the per-frame
streaming step of a memory model; its memory has the same shapes on every
frame, so every frame costs the same), the clip-mode forward of ``T + 1``
frames (re-encoding), or a single-frame segmentor's ``_forward``.
mmengine's :class:`FlopAnalyzer` counts one multiply-add as one FLOP and
leaves element-wise operations out; the local attention op reports its own
analytic count (:data:`lma_mmseg.ops.FLOP_HANDLES`).
"""
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.model import is_model_wrapper
from torch import Tensor
from torch.utils._pytree import tree_flatten

from ..models.segmentors.video_encoder_decoder import (is_memory_model,
                                                       parse_memory_offsets)
from ..ops import FLOP_HANDLES
from .export import StepModule

MODES = ('single', 'streaming', 'reencode')


class _EncodeDecodeModule(nn.Module):
    """``model.encode_decode`` (single frame or clip, logits at the input
    size, as inference runs it) as a traceable module."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: Tensor) -> Tensor:
        shape = tuple(inputs.shape[-2:])
        metas = [
            dict(img_shape=shape, ori_shape=shape, pad_shape=shape)
            for _ in range(inputs.shape[0])
        ]
        return self.model.encode_decode(inputs, metas)


def resolve_offsets(model: nn.Module,
                    memory_length: Optional[int] = None,
                    memory_offsets: Optional[Sequence[int]] = None
                    ) -> Tuple[int, ...]:
    """The memory offsets to count: ``memory_offsets``, else the previous
    ``memory_length`` frames ``(-T, ..., -1)``, else the model's."""
    if memory_length is not None and memory_offsets is not None:
        raise ValueError('give `memory_length` or `memory_offsets`, not '
                         'both')
    if memory_offsets is not None:
        return parse_memory_offsets(memory_offsets, '`memory_offsets`')
    if memory_length is not None:
        if (isinstance(memory_length, bool)
                or not isinstance(memory_length, int) or memory_length < 1):
            raise ValueError(f'`memory_length` must be an int >= 1, got '
                             f'{memory_length!r}')
        return tuple(range(-memory_length, 0))
    return tuple(model.memory_offsets)


def count_flops(model: nn.Module,
                mode: str = 'streaming',
                shape: Sequence[int] = (512, 1024),
                device=None,
                memory_length: Optional[int] = None,
                memory_offsets: Optional[Sequence[int]] = None) -> Dict:
    """FLOPs of one frame with mmengine's ``FlopAnalyzer`` (jit tracing).

    Args:
        model (nn.Module): The segmentor (used in eval mode).
        mode (str): ``'single'`` (``model.encode_decode`` on the frame),
            ``'streaming'`` (``model.step``: the backbone on the frame, the
            frame's own memory key and value, the memory read-out of ``T``
            frames, the fusion and the decode head) or ``'reencode'`` (the
            clip of ``T + 1`` frames through ``model.encode_decode``).
            Each includes the resize of the logits to the input size.
            Defaults to ``'streaming'``.
        shape (Sequence[int]): ``(H, W)`` of the frame.
        device: Device to trace on; defaults to the model's.
        memory_length (int, optional): Read the previous ``T`` frames
            (offsets ``(-T, ..., -1)``) instead of the model's offsets.
        memory_offsets (Sequence[int], optional): Read the frames at these
            offsets instead of the model's (not with ``memory_length``).
            The cost depends on the number of offsets only.

    Returns:
        dict: ``flops`` (int, or None when counting failed),
        ``attention_flops`` (the local attention's share),
        ``flops_by_module`` (top-level submodules; what runs outside them,
        e.g. the final resize, counts only in ``flops``), ``unsupported_ops``
        (op name -> count, not counted) and ``error`` (None, or why
        counting failed).
    """
    if is_model_wrapper(model):
        model = model.module
    if mode not in MODES:
        return dict(
            flops=None,
            attention_flops=0,
            flops_by_module={},
            unsupported_ops={},
            error=f'ValueError: unknown mode {mode!r}, expected one of '
            f'{MODES}')
    model.eval()
    if device is None:
        device = next(model.parameters()).device
    height, width = int(shape[0]), int(shape[1])
    frame = torch.zeros(1, 3, height, width, device=device)
    try:
        if mode != 'single' and not is_memory_model(model):
            raise ValueError(f'mode {mode!r} needs a memory model, got '
                             f'{type(model).__name__}')
        if mode == 'single':
            module, inputs = _EncodeDecodeModule(model), (frame, )
        else:
            offsets = resolve_offsets(model, memory_length, memory_offsets)
            if mode == 'streaming':
                tensors, spec = tree_flatten(
                    model.empty_memory(frame, offsets))
                module = StepModule(model, spec, offsets)
                inputs = (frame, *tensors)
            else:
                clip = frame[:, None].repeat(1, len(offsets) + 1, 1, 1, 1)
                module, inputs = _EncodeDecodeModule(model), (clip, )
        analyzer = FlopAnalyzer(module, inputs)
        analyzer.set_op_handle(**FLOP_HANDLES)
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        analyzer.tracer_warnings('none')
        with torch.no_grad():
            total = int(analyzer.total())
            by_module = analyzer.by_module()
            by_operator = analyzer.by_operator()
        prefix = 'model.'
        names = [name for name, _ in model.named_children()]
        # by_operator names ops without their namespace
        attention = sum(
            int(v) for k, v in by_operator.items()
            if any(name.split('::')[-1].endswith(k)
                   for name in FLOP_HANDLES))
        return dict(
            flops=total,
            attention_flops=attention,
            flops_by_module={
                name: int(by_module.get(prefix + name, 0))
                for name in names if by_module.get(prefix + name, 0)
            },
            unsupported_ops=dict(analyzer.unsupported_ops()),
            error=None)
    except Exception as e:  # report, do not abort a benchmark
        return dict(
            flops=None,
            attention_flops=0,
            flops_by_module={},
            unsupported_ops={},
            error=f'{type(e).__name__}: {e}')


def streaming_complexity(model: nn.Module,
                         input_shape: Sequence[int] = (512, 1024),
                         memory_length: Optional[int] = None,
                         memory_offsets: Optional[Sequence[int]] = None
                         ) -> Dict:
    """Parameters and FLOPs per frame of streaming inference.

    A memory model is counted on one :meth:`step` (reading a frame per
    memory offset); another segmentor on ``model.encode_decode`` of one
    frame (see :func:`count_flops`).

    Args:
        model (nn.Module): The segmentor (used in eval mode).
        input_shape (Sequence[int]): ``(H, W)`` of the frame.
        memory_length (int, optional): Read the previous ``T`` frames
            instead of the model's offsets.
        memory_offsets (Sequence[int], optional): Read the frames at these
            offsets instead of the model's.

    Returns:
        dict: ``params``, ``flops`` (per frame), ``flops_by_module``
        (top-level submodules) and ``attention_flops``.

    Raises:
        RuntimeError: Counting failed; the message says why.
    """
    if is_model_wrapper(model):
        model = model.module
    mode = 'streaming' if is_memory_model(model) else 'single'
    result = count_flops(
        model,
        mode,
        input_shape,
        memory_length=memory_length,
        memory_offsets=memory_offsets)
    if result['error'] is not None:
        raise RuntimeError(f'streaming_complexity: counting the FLOPs of '
                           f'{type(model).__name__} failed: '
                           f"{result['error']}")
    return dict(
        params=parameter_count(model)[''],
        flops=result['flops'],
        flops_by_module=result['flops_by_module'],
        attention_flops=result['attention_flops'])
