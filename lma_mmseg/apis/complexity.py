"""Parameters and FLOPs per frame: the one FLOP counter of the project.

Every count traces what runs at inference: ``model.step`` (the per-frame
streaming step of a memory model, with a full memory), the clip-mode
forward of the last ``T + 1`` frames (re-encoding), or a single-frame
segmentor's ``_forward``. mmengine's :class:`FlopAnalyzer` counts one
multiply-add as one FLOP and leaves element-wise operations out; the local
attention op reports its own analytic count (:data:`lma_mmseg.ops.
FLOP_HANDLES`).
"""
from typing import Dict, Sequence

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.model import is_model_wrapper
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_unflatten

from ..models.segmentors.video_encoder_decoder import is_memory_model
from ..ops import FLOP_HANDLES

MODES = ('single', 'streaming', 'reencode')


class _StepModule(nn.Module):
    """``model.step`` with the memory as flat tensor inputs and outputs, so
    that the jit tracer sees one module call."""

    def __init__(self, model: nn.Module, spec, memory_length: int):
        super().__init__()
        self.model = model
        self.spec = spec
        self.memory_length = memory_length

    def forward(self, frame: Tensor, *memory: Tensor):
        logits, new_memory = self.model.step(
            frame,
            tree_unflatten(list(memory), self.spec),
            memory_length=self.memory_length)
        return (logits, *tree_flatten(new_memory)[0])


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


def full_memory(model: nn.Module, frame: Tensor, memory_length: int):
    """The memory after ``memory_length`` steps on ``frame`` (a full FIFO,
    in the model's test mode: one memory, or one per slide window)."""
    memory = None
    with torch.no_grad():
        for _ in range(memory_length):
            _, memory = model.step(frame, memory, memory_length=memory_length)
    return memory


def count_flops(model: nn.Module,
                mode: str = 'streaming',
                shape: Sequence[int] = (512, 1024),
                device=None,
                memory_length=None) -> Dict:
    """FLOPs of one frame with mmengine's ``FlopAnalyzer`` (jit tracing).

    Args:
        model (nn.Module): The segmentor (used in eval mode).
        mode (str): ``'single'`` (``model.encode_decode`` on the frame),
            ``'streaming'`` (``model.step`` with a full memory: the backbone
            on the frame, the memory read-out, the fusion, the decode head
            and the frame's own memory key and value) or ``'reencode'``
            (the clip of ``T + 1`` frames through ``model.encode_decode``).
            Each includes the resize of the logits to the input size.
            Defaults to ``'streaming'``.
        shape (Sequence[int]): ``(H, W)`` of the frame.
        device: Device to trace on; defaults to the model's.
        memory_length (int, optional): Frames in memory; defaults to the
            model's ``memory_length``.

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
            if memory_length is None:
                memory_length = model.memory_length
            if mode == 'streaming':
                memory = full_memory(model, frame, memory_length)
                tensors, spec = tree_flatten(memory)
                module = _StepModule(model, spec, memory_length)
                inputs = (frame, *tensors)
            else:
                clip = frame[:, None].repeat(1, memory_length + 1, 1, 1, 1)
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
                         memory_length=None) -> Dict:
    """Parameters and FLOPs per frame of streaming inference.

    A memory model is counted on one :meth:`step` with a full memory of
    ``memory_length`` frames; another segmentor on ``model.encode_decode``
    of one frame (see :func:`count_flops`).

    Args:
        model (nn.Module): The segmentor (used in eval mode).
        input_shape (Sequence[int]): ``(H, W)`` of the frame.
        memory_length (int, optional): Frames in memory; defaults to the
            model's ``memory_length``.

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
        model, mode, input_shape, memory_length=memory_length)
    if result['error'] is not None:
        raise RuntimeError(f'streaming_complexity: counting the FLOPs of '
                           f'{type(model).__name__} failed: '
                           f"{result['error']}")
    return dict(
        params=parameter_count(model)[''],
        flops=result['flops'],
        flops_by_module=result['flops_by_module'],
        attention_flops=result['attention_flops'])
