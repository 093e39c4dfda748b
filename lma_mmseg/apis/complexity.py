"""Parameters and FLOPs of one streaming step, local attention included."""
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.analysis.jit_handles import get_shape
from mmengine.model import is_model_wrapper
from mmseg.models.segmentors import BaseSegmentor
from torch import Tensor

from ..models.segmentors.video_encoder_decoder import VideoEncoderDecoder

#: Traced name of the fused local attention (a ``torch.autograd.Function``).
LOCAL_ATTENTION_OP = 'prim::PythonOp.LocalAttentionFunction'


def local_attention_flop_handle(window: int):
    """A FlopAnalyzer handle for the fused local attention op.

    Counts one multiply-add per key channel and per value channel for every
    query pixel and each of its ``T * window**2`` memory positions (the
    correlation and the aggregation); the softmax is not counted, as
    mmengine does not count activations.
    """

    def handle(inputs: List[Any], outputs: List[Any]) -> int:
        query, keys, values = (get_shape(v) for v in inputs[:3])
        batch, channels, height, width = query
        num, value_channels = keys[1], values[2]
        return (batch * height * width * num * window * window *
                (channels + value_channels))

    return handle


class StreamingStep(nn.Module):
    """One streaming step of a VideoEncoderDecoder, as a traceable module:
    encode the frame, read a full memory, decode, and encode the frame's
    own memory key and value (which the next steps read)."""

    def __init__(self, model: VideoEncoderDecoder):
        super().__init__()
        self.model = model

    def forward(self, frame: Tensor, keys: Tensor, values: Tensor):
        model = self.model
        feats = model.backbone(frame)
        fused = model.neck(feats, memory=(keys, values))
        new_key, new_value = model.neck.encode_memory(feats)
        return model.decode_head.forward(fused), new_key, new_value


def streaming_complexity(model: BaseSegmentor,
                         input_shape: Sequence[int] = (512, 1024),
                         memory_length: Optional[int] = None) -> Dict:
    """Parameters and FLOPs per frame of streaming inference.

    For a :class:`VideoEncoderDecoder` one step with a full memory of
    ``memory_length`` frames is counted: the backbone on the frame, the
    query heads, the local attention (see
    :func:`local_attention_flop_handle`), the fusion, the decode head and
    the memory key/value heads of the frame. For another segmentor,
    ``model._forward`` on one frame. FLOPs follow mmengine's convention
    (one multiply-add = one FLOP).

    Args:
        model (BaseSegmentor): The segmentor (used in eval mode).
        input_shape (Sequence[int]): ``(H, W)`` of the frame.
        memory_length (int, optional): Frames in memory; defaults to the
            neck's ``memory_length``.

    Returns:
        dict: ``params``, ``flops`` (per frame), ``flops_by_module``
        (top-level submodules) and ``attention_flops``.
    """
    if is_model_wrapper(model):
        model = model.module
    model.eval()
    height, width = input_shape
    device = next(model.parameters()).device
    frame = torch.zeros(1, 3, height, width, device=device)
    if isinstance(model, VideoEncoderDecoder):
        if memory_length is None:
            memory_length = model.neck.memory_length
        with torch.no_grad():
            feats = model.backbone(frame)
            key, value = model.neck.encode_memory(feats)
        keys = key[:, None].expand(-1, memory_length, -1, -1,
                                   -1).contiguous()
        values = value[:, None].expand(-1, memory_length, -1, -1,
                                       -1).contiguous()
        step = StreamingStep(model)
        analyzer = FlopAnalyzer(step, (frame, keys, values))
        analyzer.set_op_handle(
            LOCAL_ATTENTION_OP, local_attention_flop_handle(model.neck.window))
        prefix = 'model.'
    else:
        analyzer = FlopAnalyzer(model, (frame, ))
        prefix = ''
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    with torch.no_grad():
        total = analyzer.total()
        by_module = analyzer.by_module()
        by_operator = analyzer.by_operator()
    names = [name for name, _ in model.named_children()]
    return dict(
        params=parameter_count(model)[''],
        flops=total,
        flops_by_module={
            name: by_module.get(prefix + name, 0)
            for name in names if by_module.get(prefix + name, 0)
        },
        attention_flops=sum(v for k, v in by_operator.items()
                            if k.endswith('LocalAttentionFunction')))
