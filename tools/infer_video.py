"""Segment a video (a folder of frames or a video file) frame by frame.

Streaming inference with :class:`lma_mmseg.apis.StreamingSegmenter`: every
frame is encoded once and, for LMA models, reads the memory of the previous
frames. Writes a colour overlay per frame (the dataset palette blended over
the frame) and an MP4 of the overlays, and prints the time per frame.

Example::

    python tools/infer_video.py configs/demo/lma-erfnet_demo.py \\
        work_dirs/lma-erfnet_demo/iter_200.pth \\
        data/demo/leftImg8bit_sequence/val/demo_city --out work_dirs/vis

Outputs in ``--out``: ``overlays/<frame name>.png`` (video files:
``frame_000000.png`` ...), ``<input name>.mp4`` and ``summary.json``
(frames, timings). Every file is written atomically. If a frame cannot be
read, the tool stops with an error that names it; the overlays already
written stay, and the MP4 of the frames before it is still completed.
"""
import argparse
import json
import os
import os.path as osp
import sys
import tempfile
import time
from typing import Iterator, List, Optional, Tuple

import cv2
import numpy as np
from mmengine.utils import ProgressBar

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
VIDEO_EXTENSIONS = (
    '.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v', '.mpg', '.mpeg')


class InputError(ValueError):
    """Bad command-line input (path, frame or option)."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Streaming video segmentation with colour overlays.')
    parser.add_argument('config', help='model config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        'input',
        help='a folder of frames (sorted by file name) or a video file')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda:0')
    parser.add_argument(
        '--opacity',
        type=float,
        default=0.5,
        help='weight of the class colour in the overlay, in [0, 1]')
    parser.add_argument(
        '--fps',
        type=float,
        default=None,
        help='frame rate of the MP4 (default: the video\'s own, or 10 for '
        'a folder of frames)')
    parser.add_argument('--no-video', action='store_true', help='write no MP4')
    return parser.parse_args(argv)


# ----------------------------------------------------------------- input
def list_frames(folder: str) -> List[str]:
    """The image files of ``folder``, sorted by name."""
    names = sorted(
        name for name in os.listdir(folder)
        if osp.splitext(name)[1].lower() in IMAGE_EXTENSIONS
        and osp.isfile(osp.join(folder, name)))
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


def write_png(img: np.ndarray, path: str) -> None:
    """Write an image atomically."""
    from lma_mmseg.engine.fileio import atomic_write_bytes
    ok, buf = cv2.imencode('.png', img)
    if not ok:
        raise RuntimeError(f'could not encode {path!r} as PNG')
    atomic_write_bytes(buf.tobytes(), path)


class AtomicVideoWriter:
    """An MP4 (mp4v) written to a temporary file, renamed when closed."""

    def __init__(self, path: str, fps: float, size: Tuple[int, int]):
        self.path = path
        folder = osp.dirname(osp.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(
            dir=folder,
            prefix='.' + osp.basename(path) + '.',
            suffix='.part.mp4')
        os.close(fd)
        self.size = size
        self.num_frames = 0
        self.writer = cv2.VideoWriter(
            self.tmp, cv2.VideoWriter_fourcc(*'mp4v'), fps, size)
        if not self.writer.isOpened():
            os.unlink(self.tmp)
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
            with open(self.tmp, 'rb') as f:
                os.fsync(f.fileno())
            os.replace(self.tmp, self.path)
        elif osp.exists(self.tmp):
            os.unlink(self.tmp)


# ------------------------------------------------------------------ main
def get_palette(model) -> np.ndarray:
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


def run(args) -> dict:
    if not 0.0 <= args.opacity <= 1.0:
        raise InputError(f'--opacity must be in [0, 1], got {args.opacity}')
    if args.fps is not None and args.fps <= 0:
        raise InputError(f'--fps must be positive, got {args.fps}')
    source = FrameSource(args.input)
    for path, what in ((args.config, 'config'), (args.checkpoint,
                                                 'checkpoint')):
        if not osp.isfile(path):
            raise InputError(f'{what} file {path!r} not found')

    import torch

    import lma_mmseg  # noqa: F401  (registers the components)
    from lma_mmseg.apis import StreamingSegmenter, init_model

    model = init_model(args.config, args.checkpoint, device=args.device)
    palette = get_palette(model)
    seg = StreamingSegmenter(model)

    overlay_dir = osp.join(args.out, 'overlays')
    os.makedirs(overlay_dir, exist_ok=True)
    video_path = osp.join(args.out, f'{source.name}.mp4')
    fps = args.fps or source.fps or 10.0
    writer: Optional[AtomicVideoWriter] = None
    times_ms: List[float] = []
    frames: List[str] = []
    first_shape = None
    progress = ProgressBar(source.num_frames, file=sys.stdout)
    try:
        for name, img in source:
            if first_shape is None:
                first_shape = img.shape
            elif img.shape != first_shape:
                raise InputError(
                    f'frame {name!r} of {source.path!r} is '
                    f'{img.shape[1]}x{img.shape[0]}, the first frame was '
                    f'{first_shape[1]}x{first_shape[0]}; all frames of a '
                    'video must have one size')
            if args.device.startswith('cuda'):
                torch.cuda.synchronize()
            start = time.perf_counter()
            result = seg(img)
            labels = result.pred_sem_seg.data[0].cpu().numpy()
            if args.device.startswith('cuda'):
                torch.cuda.synchronize()
            times_ms.append((time.perf_counter() - start) * 1000.0)
            overlay = colourise(
                img, labels.astype(np.int64), palette, args.opacity)
            write_png(overlay, osp.join(overlay_dir, f'{name}.png'))
            if not args.no_video:
                if writer is None:
                    writer = AtomicVideoWriter(
                        video_path, fps, (img.shape[1], img.shape[0]))
                writer.write(overlay)
            frames.append(name)
            progress.update()
    finally:
        if writer is not None:
            # keep the frames done so far even when a later one failed
            writer.close(keep=True)
    sys.stdout.write('\n')
    summary = dict(
        input=source.path,
        num_frames=len(frames),
        frames=frames,
        overlays=overlay_dir,
        video=video_path if writer is not None else None,
        fps=fps,
        ms_per_frame=dict(
            mean=float(np.mean(times_ms)),
            median=float(np.median(times_ms)),
            # the first frames have no (full) memory and warm caches up
            mean_after_first=float(np.mean(times_ms[1:]))
            if len(times_ms) > 1 else float(times_ms[0])),
        device=args.device)
    from lma_mmseg.engine.fileio import atomic_write_text
    atomic_write_text(
        json.dumps(summary, indent=2), osp.join(args.out, 'summary.json'))
    ms = summary['ms_per_frame']
    print(
        f'{len(frames)} frames | ms/frame: mean {ms["mean"]:.1f}, median '
        f'{ms["median"]:.1f}, mean without the first '
        f'{ms["mean_after_first"]:.1f} | device {args.device}')
    print(f'overlays: {overlay_dir}')
    if summary['video']:
        print(f'video: {video_path}')
    return summary


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except InputError as e:
        print(f'infer_video.py: error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
