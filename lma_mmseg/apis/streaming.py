"""Frame-by-frame (streaming) video segmentation with a memory cache."""
import copy
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.dataset import Compose
from mmengine.model import is_model_wrapper
from mmseg.models.segmentors import BaseSegmentor
from mmseg.registry import TRANSFORMS
from mmseg.structures import SegDataSample
from torch import Tensor

from ..models.segmentors.video_encoder_decoder import (StepMemory,
                                                       StreamMemory,
                                                       VideoEncoderDecoder,
                                                       is_memory_model,
                                                       parse_memory_offsets)

Frame = Union[str, np.ndarray]

LOAD_TRANSFORMS = ('LoadClipFromFiles', 'LoadImageFromFile',
                   'LoadImageFromNDArray')
PACK_TRANSFORMS = ('PackClipSegInputs', 'PackSegInputs')


def _type_name(transform: dict) -> str:
    kind = transform.get('type')
    if isinstance(kind, str):
        return kind.split('.')[-1]
    return getattr(kind, '__name__', str(kind))


def frame_pipeline(pipeline: Optional[Sequence[dict]],
                   from_ndarray: bool) -> List[dict]:
    """Turn a (clip or single-frame) test pipeline into a single-frame one.

    Clip loading becomes ``LoadImageFromFile`` (or ``LoadImageFromNDArray``
    for arrays), transforms wrapped in a ``TransformBroadcaster`` (or
    ``ClipTransformBroadcaster``) are applied to the frame directly,
    annotation loading is dropped (a stream has no labels) and
    ``PackClipSegInputs`` becomes mmseg's ``PackSegInputs``.
    Other transforms (e.g. ``Resize``) are kept as they are.

    Args:
        pipeline (Sequence[dict], optional): The config's test pipeline;
            None gives load + pack.
        from_ndarray (bool): Frames are numpy arrays, not paths.

    Returns:
        list[dict]: Transform configs for one frame.
    """
    load = dict(
        type='LoadImageFromNDArray' if from_ndarray else 'LoadImageFromFile')
    if not pipeline:
        return [load, dict(type='PackSegInputs')]
    out = []
    for transform in pipeline:
        transform = copy.deepcopy(dict(transform))
        name = _type_name(transform)
        if name in LOAD_TRANSFORMS:
            if name in ('LoadImageFromFile', 'LoadImageFromNDArray'):
                kwargs = {k: v for k, v in transform.items() if k != 'type'}
            else:  # the image-decoding options of the clip loader
                kwargs = {
                    k: v
                    for k, v in transform.items()
                    if k in ('to_float32', 'color_type', 'imdecode_backend',
                             'backend_args')
                }
            out.append(dict(load, **kwargs))
        elif name.startswith('LoadAnnotations') or (
                name.startswith('Load') and 'Annotation' in name):
            continue
        elif name.endswith('TransformBroadcaster'):
            out.extend(_inner(transform, from_ndarray))
        elif name in PACK_TRANSFORMS:
            pack = dict(type='PackSegInputs')
            if 'meta_keys' in transform:
                pack['meta_keys'] = transform['meta_keys']
            out.append(pack)
        else:
            out.append(transform)
    if not any(_type_name(t) in LOAD_TRANSFORMS for t in out):
        out.insert(0, load)
    if _type_name(out[-1]) != 'PackSegInputs':
        out.append(dict(type='PackSegInputs'))
    return out


def _inner(broadcaster: dict, from_ndarray: bool) -> List[dict]:
    """The transforms wrapped by a ``TransformBroadcaster``, for one
    frame."""
    inner = broadcaster.get('transforms', [])
    if isinstance(inner, dict):
        inner = [inner]
    out = []
    for transform in inner:
        name = _type_name(transform)
        if name.endswith('TransformBroadcaster'):
            out.extend(_inner(transform, from_ndarray))
        elif name not in LOAD_TRANSFORMS + PACK_TRANSFORMS and not (
                name.startswith('Load') and 'Annotation' in name):
            out.append(copy.deepcopy(dict(transform)))
    return out


class StreamingSegmenter:
    """Segment a video frame by frame, encoding every frame once.

    A loop over the segmentor's own per-frame step: for a memory model
    (:func:`~lma_mmseg.models.is_memory_model`) each frame goes through
    :meth:`VideoEncoderDecoder.step`, which encodes it once, reads the
    memory keys and values of the frames at the model's ``memory_offsets``
    (e.g. ``t-9, t-6, t-3``), decodes and pushes the frame's own key and
    value into a memory of the newest ``max(|offset|)`` frames; the memory
    is carried from frame to frame here. The result for frame ``t`` equals
    the clip-mode ``model.predict`` on the frames ``t + offset`` and ``t``;
    at the start of a stream only the frames that exist are read (none for
    the first frame: with the neck's ``empty_memory='skip'`` it is then
    segmented exactly as the single-frame model would). In ``slide`` test
    mode the step keeps one memory per window. Any other mmseg segmentor is
    run frame by frame without memory (``model.inference``).

    Frames (paths or HxWx3 BGR arrays) go through the config's test pipeline
    turned into a single-frame one (see :func:`frame_pipeline`: the same
    resizing as the test set) and the model's data preprocessor, as
    :func:`mmseg.apis.inference_model` does.

    Example::

        model = init_model(config, checkpoint, device='cpu')
        seg = StreamingSegmenter(model)
        for frame in frames:
            result = seg(frame)        # SegDataSample, pred_sem_seg
        seg.reset()                    # before the next video

    Args:
        model (BaseSegmentor): The segmentor (eval mode is set).
        memory_offsets (Sequence[int], optional): Offsets of the memory
            frames to read, oldest first; defaults to the model's
            ``memory_offsets``. Only for a memory model.
        test_pipeline (Sequence[dict], optional): Test pipeline to use
            instead of ``model.cfg.test_pipeline``.
        step_fn (callable, optional): What runs a step of a memory model,
            with the signature of ``model.step``, e.g.
            ``torch.compile(model.step)``; each stream then starts from
            ``model.empty_memory`` (not None), so a compiled step sees the
            same input structure on every frame and compiles once.
            Defaults to ``model.step``.
    """

    def __init__(self,
                 model: BaseSegmentor,
                 memory_offsets: Optional[Sequence[int]] = None,
                 test_pipeline: Optional[Sequence[dict]] = None,
                 step_fn: Optional[Callable] = None):
        if is_model_wrapper(model):
            model = model.module
        if not isinstance(model, BaseSegmentor):
            raise TypeError(f'StreamingSegmenter: `model` must be an mmseg '
                            f'segmentor, got {type(model).__name__}')
        self.model = model.eval()
        self.is_video = is_memory_model(model)
        if memory_offsets is not None and not self.is_video:
            raise ValueError(
                f'StreamingSegmenter: `memory_offsets` needs a memory model, '
                f'got the single-frame {type(model).__name__}')
        if memory_offsets is None:
            memory_offsets = model.memory_offsets if self.is_video else ()
        else:
            memory_offsets = parse_memory_offsets(
                memory_offsets, 'StreamingSegmenter: `memory_offsets`')
        #: tuple[int]: Offsets of the memory frames read (() without memory).
        self.memory_offsets = tuple(memory_offsets)
        if step_fn is not None and not callable(step_fn):
            raise TypeError(f'StreamingSegmenter: `step_fn` must be '
                            f'callable, got {type(step_fn).__name__}')
        self.step_fn = step_fn or (model.step if self.is_video else None)
        # a step function of its own (e.g. compiled) starts every stream
        # from an empty memory of the frames' shapes, not from None
        self._start_empty = self.is_video and self.step_fn != model.step
        self._empty: Dict[tuple, StepMemory] = {}
        if test_pipeline is None:
            cfg = getattr(model, 'cfg', None)
            if cfg is not None:
                test_pipeline = cfg.get('test_pipeline', None)
                if test_pipeline is None and 'test_dataloader' in cfg:
                    test_pipeline = cfg.test_dataloader.dataset.get(
                        'pipeline', None)
        self.test_pipeline = test_pipeline
        self._pipelines: Dict[bool, Compose] = {}
        self._memory: Optional[StepMemory] = None
        self._input_shape: Optional[torch.Size] = None
        self.num_frames = 0

    # -------------------------------------------------------------- state
    def reset(self) -> None:
        """Forget the memory (call before a new video)."""
        self._memory = None
        self._input_shape = None
        self.num_frames = 0

    @property
    def memory(self) -> Optional[StepMemory]:
        """The memory the next step reads (what the last step returned)."""
        return self._memory

    @property
    def memory_length(self) -> int:
        """int: Memory frames read per frame (``len(memory_offsets)``; 0
        without memory)."""
        return len(self.memory_offsets)

    @property
    def memory_size(self) -> int:
        """int: Number of frames currently held in memory (at most
        ``max(|offset|)``)."""
        memory = self._memory
        if memory is None:
            return 0
        if isinstance(memory, StreamMemory):
            return memory.num_frames
        return max((m.num_frames for m in memory if m is not None),
                   default=0)

    def _start_memory(self, inputs: Tensor) -> Optional[StepMemory]:
        """The memory the first step of a stream reads: None, or for a step
        function of its own the model's empty memory (one per input shape,
        dtype and device, learned once)."""
        if not self._start_empty:
            return None
        key = (tuple(inputs.shape), inputs.dtype, inputs.device)
        if key not in self._empty:
            self._empty[key] = self.model.empty_memory(
                inputs, memory_offsets=self.memory_offsets)
        return self._empty[key]

    # ------------------------------------------------------------ frames
    def _pipeline(self, from_ndarray: bool) -> Compose:
        if from_ndarray not in self._pipelines:
            transforms = [
                TRANSFORMS.build(t)
                for t in frame_pipeline(self.test_pipeline, from_ndarray)
            ]
            self._pipelines[from_ndarray] = Compose(transforms)
        return self._pipelines[from_ndarray]

    def preprocess(self, frame: Frame) -> Tuple[Tensor, List[SegDataSample]]:
        """Run the test pipeline and the data preprocessor on one frame.

        Args:
            frame (str | np.ndarray): Image path or HxWx3 BGR uint8 array.

        Returns:
            tuple: Normalised (and padded) input (1, 3, H, W) and its data
            samples.
        """
        if isinstance(frame, np.ndarray):
            if frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f'StreamingSegmenter: a frame array must '
                                 f'be HxWx3 (BGR), got shape {frame.shape}')
            data = self._pipeline(True)(dict(img=frame))
        elif isinstance(frame, str):
            data = self._pipeline(False)(dict(img_path=frame))
        else:
            raise TypeError(f'StreamingSegmenter: a frame must be an image '
                            f'path or an HxWx3 BGR array, got '
                            f'{type(frame).__name__}')
        data = self.model.data_preprocessor(
            dict(inputs=[data['inputs']], data_samples=[data['data_samples']]),
            False)
        return data['inputs'], data['data_samples']

    @torch.no_grad()
    def __call__(self, frame: Frame) -> SegDataSample:
        """Segment the next frame of the video.

        Args:
            frame (str | np.ndarray): Image path or HxWx3 BGR uint8 array.

        Returns:
            SegDataSample: ``pred_sem_seg`` and ``seg_logits`` at the
            frame's original size, plus its metainfo.
        """
        inputs, data_samples = self.preprocess(frame)
        logits = self.step(inputs, [ds.metainfo for ds in data_samples])
        return self.model.postprocess_result(logits, data_samples)[0]

    # ----------------------------------------------------------- tensors
    @torch.no_grad()
    def step(self,
             inputs: Tensor,
             batch_img_metas: Optional[List[dict]] = None) -> Tensor:
        """Segment the next frame given as a preprocessed tensor.

        Args:
            inputs (Tensor): The frame (B, 3, H, W), normalised and padded
                as the data preprocessor does (B streams in lockstep).
            batch_img_metas (list[dict], optional): Metainfo; defaults to
                the input size.

        Returns:
            Tensor: Logits (B, num_classes, H, W) at the input size.
        """
        if not isinstance(inputs, Tensor) or inputs.dim() != 4:
            raise ValueError(f'StreamingSegmenter.step: `inputs` must be a '
                             f'(B, 3, H, W) tensor, got '
                             f'{getattr(inputs, "shape", type(inputs))}')
        if self._input_shape is not None and (inputs.shape !=
                                              self._input_shape):
            raise ValueError(
                f'StreamingSegmenter: frame {self.num_frames} has input '
                f'shape {tuple(inputs.shape)}, the memory holds frames of '
                f'shape {tuple(self._input_shape)}; call reset() before a '
                f'new video')
        model = self.model
        if self.is_video:
            memory = self._memory
            if memory is None:
                memory = self._start_memory(inputs)
            logits, self._memory = self.step_fn(
                inputs,
                memory,
                batch_img_metas,
                memory_offsets=self.memory_offsets)
        else:
            if batch_img_metas is None:
                batch_img_metas = VideoEncoderDecoder._default_metas(inputs)
            metas = [dict(meta) for meta in batch_img_metas]
            if model.test_cfg is None:
                logits = model.encode_decode(inputs, metas)
            else:
                logits = model.inference(inputs, metas)
        self._input_shape = inputs.shape
        self.num_frames += 1
        return logits
