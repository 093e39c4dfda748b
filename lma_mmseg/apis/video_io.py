"""Frames in, overlays out: the input and output side of video inference.

:class:`FrameSource` reads a folder of frames or a video file in order,
:func:`colourise` blends predicted classes over a frame with the dataset
palette, :class:`AtomicVideoWriter` writes an MP4 atomically. Used by
``tools/infer_video.py``.
"""
import os
import os.path as osp
from typing import Iterator, List, Optional, Tuple

import cv2
import numpy as np

from ..fileio import AtomicTarget, atomic_write_bytes

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
VIDEO_EXTENSIONS = (
    '.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v', '.mpg', '.mpeg')


class InputError(ValueError):
    """Bad command-line input (path, frame or option)."""


# ----------------------------------------------------------------- input
def list_frames(folder: str) -> List[str]:
    """The image files of ``folder``, sorted by name.

    Each frame's outputs are named after its stem (the name without the
    extension), so two frames of one stem (``f000.png`` and ``f000.jpg``)
    are refused rather than one overwriting the other's output. A folder
    whose name has an image extension is refused too.

    Raises:
        InputError: ``folder`` is not a folder, holds no frame, holds a
            folder named like a frame, or two frames of one stem (both
            named).
    """
    if not osp.isdir(folder):
        raise InputError(
            f'frame folder {folder!r} does not exist or is not '
            'a folder')
    names = sorted(
        name for name in os.listdir(folder)
        if osp.splitext(name)[1].lower() in IMAGE_EXTENSIONS)
    stems = {}
    for name in names:
        path = osp.join(folder, name)
        if not osp.isfile(path):
            raise InputError(
                f'{path!r} in the frame folder is not a file (a folder '
                'named like an image?); move it out of the frame folder')
        stem = osp.splitext(name)[0]
        if stem in stems:
            raise InputError(
                f'frames {osp.join(folder, stems[stem])!r} and {path!r} have '
                f'one name {stem!r}: their outputs would overwrite each '
                'other; keep one of them')
        stems[stem] = name
    if not names:
        raise InputError(
            f'input folder {folder!r} holds no frames (no file with an '
            f'image extension: {", ".join(IMAGE_EXTENSIONS)})')
    return [osp.join(folder, name) for name in names]


def read_frame(path: str) -> np.ndarray:
    """A frame file as an HxWx3 BGR uint8 array; an error names the file."""
    data = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise InputError(
            f'cannot read frame {path!r}: not a decodable '
            'image (corrupt, truncated or empty file)')
    return img


class FrameSource:
    """Frames of a folder or a video file, in order.

    Args:
        path (str): Folder of frames or video file.

    Attributes:
        kind (str): 'folder' or 'video'.
        name (str): Input name, used for the MP4.
        fps (float, optional): The video's frame rate when known.
        num_frames (int): Number of frames when known, else 0.
    """

    def __init__(self, path: str):
        if not osp.exists(path):
            raise InputError(f'input {path!r} does not exist')
        self.path = path
        self.name = osp.basename(osp.normpath(path))
        self.fps: Optional[float] = None
        if osp.isdir(path):
            self.kind = 'folder'
            self.frames = list_frames(path)
            self.num_frames = len(self.frames)
            return
        ext = osp.splitext(path)[1].lower()
        if ext in IMAGE_EXTENSIONS:
            raise InputError(
                f'input {path!r} is a single image; give the folder that '
                'holds the frames of the video')
        if ext not in VIDEO_EXTENSIONS:
            raise InputError(
                f'input {path!r} has an unknown extension {ext!r}: give a '
                f'folder of frames or a video file '
                f'({", ".join(VIDEO_EXTENSIONS)})')
        self.kind = 'video'
        self.name = osp.splitext(self.name)[0]
        cap = cv2.VideoCapture(path)
        if not cap.isOpened():
            raise InputError(
                f'cannot open video {path!r} (corrupt file or '
                'codec not supported by OpenCV)')
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and fps > 0 else None
        self.num_frames = max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
        cap.release()

    def __iter__(self) -> Iterator[Tuple[str, np.ndarray]]:
        """Yields (frame name without extension, BGR image)."""
        if self.kind == 'folder':
            for path in self.frames:
                yield osp.splitext(osp.basename(path))[0], read_frame(path)
            return
        cap = cv2.VideoCapture(self.path)
        try:
            index = 0
            while True:
                ok, img = cap.read()
                if not ok:
                    break
                yield f'frame_{index:06d}', img
                index += 1
            if index == 0:
                raise InputError(
                    f'no frame could be read from video {self.path!r}')
        finally:
            cap.release()


# ---------------------------------------------------------------- output
def colourise(
        img: np.ndarray, labels: np.ndarray, palette: np.ndarray,
        opacity: float) -> np.ndarray:
    """Blend the class colours over a frame.

    Args:
        img (np.ndarray): Frame, (H, W, 3) BGR uint8.
        labels (np.ndarray): Class indices, (H, W).
        palette (np.ndarray): (num_classes, 3) RGB colours.
        opacity (float): Weight of the class colour; 1.0 gives the colour
            map alone.

    Returns:
        np.ndarray: (H, W, 3) BGR uint8 overlay.
    """
    if labels.shape != img.shape[:2]:
        raise ValueError(
            f'prediction shape {labels.shape} differs from the '
            f'frame shape {img.shape[:2]}')
    if labels.size and (labels.min() < 0 or labels.max() >= len(palette)):
        raise ValueError(
            f'predicted class {int(labels.max())} has no palette colour '
            f'(palette of {len(palette)} colours)')
    colours = palette[labels][..., ::-1].astype(np.float32)  # RGB -> BGR
    out = (1.0 - opacity) * img.astype(np.float32) + opacity * colours
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def write_png(path: str, img: np.ndarray) -> None:
    """Encode an image as PNG and write it atomically."""
    ok, buf = cv2.imencode('.png', img)
    if not ok:
        raise RuntimeError(f'could not encode {path!r} as PNG')
    atomic_write_bytes(path, buf.tobytes())


class AtomicVideoWriter:
    """An MP4 (mp4v) written atomically
    (:class:`lma_mmseg.fileio.AtomicTarget`): it appears under ``path`` only
    when closed with at least one frame.

    Args:
        path (str): Destination ``.mp4`` file.
        fps (float): Frame rate.
        size (tuple[int, int]): Frame size (W, H).
    """

    def __init__(self, path: str, fps: float, size: Tuple[int, int]):
        self.path = path
        self.size = size
        self.num_frames = 0
        self._target = AtomicTarget(path)
        self.tmp = self._target.tmp
        self.writer = cv2.VideoWriter(
            self.tmp, cv2.VideoWriter_fourcc(*'mp4v'), fps, size)
        if not self.writer.isOpened():
            self._target.discard()
            raise RuntimeError(
                f'OpenCV cannot write an mp4v video to '
                f'{path!r} (no encoder available)')

    def write(self, img: np.ndarray) -> None:
        self.writer.write(img)
        self.num_frames += 1

    def close(self, keep: bool = True) -> None:
        """Finish the file; keep it under its name if any frame was
        written, else remove it."""
        self.writer.release()
        if keep and self.num_frames:
            self._target.commit()
        else:
            self._target.discard()


def get_palette(model) -> np.ndarray:
    """The (num_classes, 3) RGB palette of ``model.dataset_meta``; an error
    says what is missing."""
    meta = getattr(model, 'dataset_meta', None) or {}
    palette = meta.get('palette')
    num_classes = getattr(
        getattr(model, 'decode_head', None), 'num_classes', None)
    if not palette:
        raise ValueError(
            'the model has no palette in dataset_meta; the '
            'checkpoint should carry meta.dataset_meta')
    palette = np.asarray(palette, dtype=np.uint8)
    if palette.ndim != 2 or palette.shape[1] != 3:
        raise ValueError(
            f'dataset_meta palette must be (num_classes, 3) '
            f'RGB colours, got shape {palette.shape}')
    if num_classes is not None and len(palette) < num_classes:
        raise ValueError(
            f'dataset_meta palette has {len(palette)} colours '
            f'for {num_classes} classes')
    return palette
