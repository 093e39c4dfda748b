"""Export the per-frame step for deployment (``torch.export``, AOTInductor).

The exported program is :meth:`VideoEncoderDecoder.step` at a fixed input
size, its memory (a :class:`~lma_mmseg.models.StreamMemory`) being explicit
inputs and outputs::

    logits, *memory = program(frame, *memory)
    # frame (B, 3, H, W), preprocessed as the data preprocessor does
    # memory: keys (B, K, Ck, h, w), values (B, K, Cv, h, w) and count (an
    #         int64 scalar: frames seen, at most K) in whole test mode, with
    #         K = max(|offset|) of the model's memory_offsets; one such
    #         triple per window, in window order, in slide mode
    # logits (B, num_classes, H, W)

The memory has the same shapes on every frame: a stream starts from zero
keys and values and ``count = 0`` (:func:`zero_memory`, what
:class:`ExportedStreamer` does), and the program reads the frames at the
model's memory offsets that exist, leaving the others out of the attention,
exactly as the eager step does. An exported stream therefore equals the eager
step from its first frame on, for consecutive and strided offsets.
``step.json`` records the offsets, the memory shapes and dtypes, the
preprocessing and the classes.

The local attention is a ``torch.library`` op of :mod:`lma_mmseg.ops`: a
process that loads the program must ``import lma_mmseg`` first.
"""
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.model import is_model_wrapper
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_unflatten

from ..fileio import atomic_write_json, atomic_writer
from ..models.segmentors.video_encoder_decoder import is_memory_model
from .archive import check_archive, validate_step_info

STEP_PROGRAM = 'step.pt2'
AOTI_PACKAGE = 'step_aoti.pt2'
STEP_INFO = 'step.json'


class StepModule(nn.Module):
    """:meth:`VideoEncoderDecoder.step` with the memory as flat tensor
    inputs and outputs (the module that is exported).

    Args:
        model (VideoEncoderDecoder): The segmentor, in eval mode.
        spec (TreeSpec): Structure of the memory (one ``StreamMemory``, or
            one per slide window), from ``tree_flatten``.
        memory_offsets (Sequence[int]): The offsets the step reads.
    """

    def __init__(self, model: nn.Module, spec,
                 memory_offsets: Sequence[int]):
        super().__init__()
        self.model = model
        self.spec = spec
        self.memory_offsets = tuple(memory_offsets)

    def forward(self, frame: Tensor, *memory: Tensor) -> Tuple[Tensor, ...]:
        logits, new_memory = self.model.step(
            frame,
            tree_unflatten(list(memory), self.spec),
            memory_offsets=self.memory_offsets)
        return (logits, *tree_flatten(new_memory)[0])


def example_memory(model: nn.Module,
                   frame: Tensor,
                   memory_offsets: Optional[Sequence[int]] = None):
    """The empty memory a stream of frames like ``frame`` starts from
    (:meth:`VideoEncoderDecoder.empty_memory`: zero keys and values, count
    0), flattened.

    Returns:
        tuple: The flat list of memory tensors and its tree structure.
    """
    return tree_flatten(model.empty_memory(frame, memory_offsets))


def _check_model(model: nn.Module) -> nn.Module:
    if is_model_wrapper(model):
        model = model.module
    if not is_memory_model(model):
        raise TypeError(f'export_step: the model must keep a memory '
                        f'(VideoEncoderDecoder), got {type(model).__name__}; '
                        f'a single-frame model exports with torch.export '
                        f'directly')
    return model.eval()


def export_step(model: nn.Module,
                shape: Sequence[int],
                out_dir: str,
                batch_size: int = 1,
                aoti: bool = False) -> Dict[str, str]:
    """Export ``model.step`` with its fixed-size memory to ``out_dir``.

    Writes ``step.pt2`` (a ``torch.export`` program, load it with
    ``torch.export.load(path).module()``), ``step.json`` (shapes, memory
    offsets, preprocessing, classes; see :func:`step_info`) and, with
    ``aoti``, the AOTInductor package ``step_aoti.pt2`` (load it with
    ``torch._inductor.aoti_load_package``). Files are written atomically.
    The example memory traced is the empty one; the program runs any
    memory of the same shapes (see the module docstring).

    Args:
        model (VideoEncoderDecoder): The segmentor.
        shape (Sequence[int]): ``(H, W)`` of the preprocessed frames.
        out_dir (str): Output folder (created).
        batch_size (int): Streams in lockstep (B). Defaults to 1.
        aoti (bool): Also compile an AOTInductor package.

    Returns:
        dict: ``program``, ``info`` (and ``aoti``) paths,
        ``num_memory_tensors``, ``memory_length`` (frames read) and
        ``memory_offsets``.
    """
    model = _check_model(model)
    if len(shape) != 2 or any(int(s) < 1 for s in shape):
        raise ValueError(f'export_step: shape must be (H, W) with positive '
                         f'sizes, got {tuple(shape)}')
    device = next(model.parameters()).device
    frame = torch.zeros(batch_size, 3, int(shape[0]), int(shape[1]),
                        device=device)
    tensors, spec = example_memory(model, frame)
    module = StepModule(model, spec, model.memory_offsets).eval()
    os.makedirs(out_dir, exist_ok=True)
    with torch.no_grad():
        program = torch.export.export(module, (frame, *tensors))
    paths = dict(
        program=osp.join(out_dir, STEP_PROGRAM),
        num_memory_tensors=len(tensors),
        memory_length=model.memory_length,
        memory_offsets=list(model.memory_offsets))
    # the archive holds no pickled sample inputs (loading unpickles nothing
    # but tensors); AOTInductor compiles from them, so they come back after
    example_inputs, program.example_inputs = program.example_inputs, None
    with atomic_writer(paths['program'], 'wb') as f:
        torch.export.save(program, f)
    program.example_inputs = example_inputs
    if aoti:
        from torch._inductor import aoti_compile_and_package
        paths['aoti'] = osp.join(out_dir, AOTI_PACKAGE)
        with atomic_writer(paths['aoti'], 'wb') as f:
            aoti_compile_and_package(program, package_path=f)
    paths['info'] = osp.join(out_dir, STEP_INFO)
    atomic_write_json(paths['info'], step_info(model, frame, tensors))
    return paths


def step_info(model: nn.Module, frame: Tensor,
              memory: Sequence[Tensor]) -> dict:
    """What a deployment needs besides the program: the input shape, the
    memory offsets (``memory_offsets``; ``memory_length`` frames read,
    ``memory_span`` frames kept), the memory tensors' shapes and dtypes (in
    program order), the preprocessing and the classes."""
    pre = model.data_preprocessor
    meta = getattr(model, 'dataset_meta', None) or {}

    def as_list(value):
        if value is None:
            return None
        return [float(v) for v in torch.as_tensor(value).flatten()]

    return dict(
        input_shape=list(frame.shape),
        memory_shapes=[list(t.shape) for t in memory],
        memory_dtypes=[str(t.dtype).replace('torch.', '') for t in memory],
        memory_offsets=[int(o) for o in model.memory_offsets],
        memory_length=int(model.memory_length),
        memory_span=int(model.memory_span),
        test_mode=(model.test_cfg or {}).get('mode', 'whole'),
        num_classes=int(model.decode_head.num_classes),
        mean=as_list(getattr(pre, 'mean', None)),
        std=as_list(getattr(pre, 'std', None)),
        bgr_to_rgb=bool(getattr(pre, 'channel_conversion', False)),
        classes=list(meta.get('classes') or []),
        palette=[list(map(int, c)) for c in (meta.get('palette') or [])])


def load_step(path: str, aoti: bool = False):
    """Load an exported step: a callable ``(frame, *memory) ->
    (logits, *memory)``.

    Args:
        path (str): ``step.pt2`` or, with ``aoti``, ``step_aoti.pt2``.
        aoti (bool): Load an AOTInductor package.
    """
    import lma_mmseg.ops  # noqa: F401  (registers the local attention op)
    if not osp.isfile(path):
        raise FileNotFoundError(f'exported step {path!r} not found')
    # refuse pickles that need more than the weights-only loader, before
    # torch's loader (which may retry without weights_only) sees them
    check_archive(path)
    if aoti:
        from torch._inductor import aoti_load_package
        return aoti_load_package(path)
    return torch.export.load(path).module()


def zero_memory(info: dict,
                device: Optional[torch.device] = None) -> List[Tensor]:
    """The memory tensors a stream starts from (zero keys and values,
    count 0), from ``step.json``'s ``memory_shapes`` and ``memory_dtypes``.

    Args:
        info (dict): What :func:`load_step_info` returns.
        device (torch.device, optional): Where to put them (CPU).
    """
    shapes = info.get('memory_shapes')
    dtypes = info.get('memory_dtypes')
    if not shapes or not dtypes or len(shapes) != len(dtypes):
        raise ValueError(
            f'step.json must give memory_shapes and memory_dtypes of the '
            f'same length, got {shapes!r} and {dtypes!r}; export the model '
            f'again with tools/deploy/export.py')
    return [
        torch.zeros(shape, dtype=getattr(torch, dtype), device=device)
        for shape, dtype in zip(shapes, dtypes)
    ]


class ExportedStreamer:
    """Run a stream of preprocessed frames through an exported step.

    Every stream starts from ``memory`` (the empty memory: zero keys and
    values, count 0; see :func:`zero_memory`), so frame ``t`` of the stream
    gives the logits of the eager :meth:`VideoEncoderDecoder.step` from
    ``t = 0`` on.

    Args:
        step (callable): What :func:`load_step` returns.
        memory (Sequence[Tensor]): The memory tensors a stream starts from,
            in program order.
    """

    def __init__(self, step, memory: Sequence[Tensor]):
        if not callable(step):
            raise TypeError(f'ExportedStreamer: `step` must be callable, got '
                            f'{type(step).__name__}')
        if not memory or not all(isinstance(t, Tensor) for t in memory):
            raise ValueError('ExportedStreamer: `memory` must be the memory '
                             'tensors a stream starts from (zero_memory())')
        self.step = step
        self.start_memory = [t.clone() for t in memory]
        self.memory: Optional[List[Tensor]] = None

    def reset(self) -> None:
        """Forget the memory (before a new video)."""
        self.memory = None

    def __call__(self, frame: Tensor) -> Tensor:
        """Logits (B, num_classes, H, W) of the next frame.

        Args:
            frame (Tensor): The frame (B, 3, H, W), preprocessed.
        """
        memory = self.start_memory if self.memory is None else self.memory
        outs = self.step(frame, *memory)
        self.memory = list(outs[1:])
        return outs[0]


def load_step_info(program_dir: str) -> dict:
    """Read ``step.json`` of an export folder."""
    import json
    path = osp.join(program_dir, STEP_INFO)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{path!r} not found: {program_dir!r} is not a folder written '
            f'by tools/deploy/export.py')
    with open(path) as f:
        try:
            info = json.load(f)
        except ValueError as exc:
            raise ValueError(f'{path}: not valid JSON ({exc})') from exc
    return validate_step_info(info, program_dir)


def preprocess_frame(image, info: dict) -> Tensor:
    """A BGR uint8 image (H, W, 3) -> the program's input (1, 3, H, W):
    resized to the exported size, channel order and normalisation of the
    model's data preprocessor."""
    import cv2
    import numpy as np
    if not isinstance(image, np.ndarray) or image.ndim != 3 or \
            image.shape[2] != 3:
        raise ValueError(f'a frame must be an HxWx3 BGR array, got '
                         f'{getattr(image, "shape", type(image).__name__)}')
    height, width = info['input_shape'][-2:]
    if image.shape[:2] != (height, width):
        image = cv2.resize(image, (width, height),
                           interpolation=cv2.INTER_LINEAR)
    if info.get('bgr_to_rgb'):
        image = image[..., ::-1]
    x = torch.from_numpy(np.ascontiguousarray(image)).float()
    x = x.permute(2, 0, 1)[None]
    if info.get('mean') is not None:
        x = x - torch.tensor(info['mean']).view(1, -1, 1, 1)
    if info.get('std') is not None:
        x = x / torch.tensor(info['std']).view(1, -1, 1, 1)
    return x.contiguous()


def stream_exported(program_dir: str,
                    frames: Sequence[str],
                    out_dir: str,
                    aoti: bool = False,
                    progress: bool = True) -> dict:
    """Run image files (one video, in order) through an exported step and
    write each prediction as a label PNG (``{stem}.png``, class indices at
    the exported input size) into ``out_dir``.

    Args:
        program_dir (str): Folder written by :func:`export_step`.
        frames (Sequence[str]): Image paths, in stream order.
        out_dir (str): Where the PNGs go (written atomically).
        aoti (bool): Use the AOTInductor package instead of the program.
        progress (bool): Show a progress bar.

    Returns:
        dict: ``frames`` (count), ``outputs`` (paths) and ``ms_per_frame``
        (median wall time of the step calls).
    """
    import time

    import mmcv
    import numpy as np

    from ..fileio import atomic_write_png
    info = load_step_info(program_dir)
    path = osp.join(program_dir, AOTI_PACKAGE if aoti else STEP_PROGRAM)
    step = load_step(path, aoti=aoti)
    if not frames:
        raise ValueError('stream_exported: no frames given')
    streamer = ExportedStreamer(step, zero_memory(info))
    times, outputs = [], []
    bar = None
    if progress:
        from mmengine.utils import ProgressBar
        bar = ProgressBar(len(frames))
    for frame_path in frames:
        image = mmcv.imread(frame_path)
        if image is None:
            raise ValueError(f'cannot read frame {frame_path!r}')
        x = preprocess_frame(image, info)
        start = time.perf_counter()
        with torch.no_grad():
            logits = streamer(x)
        times.append((time.perf_counter() - start) * 1000.0)
        label = logits.argmax(dim=1)[0].to(torch.uint8).numpy()
        stem = osp.splitext(osp.basename(frame_path))[0]
        outputs.append(atomic_write_png(osp.join(out_dir, f'{stem}.png'),
                                        label))
        if bar is not None:
            bar.update()
    return dict(
        frames=len(frames),
        outputs=outputs,
        ms_per_frame=float(np.median(times)))
