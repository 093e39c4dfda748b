"""Segment a video (a folder of frames or a video file) frame by frame.

Streaming inference with :class:`lma_mmseg.apis.StreamingSegmenter`: every
frame is encoded once and, for LMA models, reads the memory frames at the
model's memory offsets. Writes a colour overlay per frame (the dataset
palette blended over the frame) and an MP4 of the overlays, and prints the
time per frame.

Example::

    python tools/infer_video.py configs/demo/lma-erfnet_demo.py \\
        work_dirs/lma-erfnet_demo/iter_200.pth \\
        data/demo/leftImg8bit_sequence/val/demo_city --out work_dirs/vis

Outputs in ``--out``: ``overlays/<frame name>.png`` (video files:
``frame_000000.png`` ...), ``<input name>.mp4`` and ``summary.json``
(frames, timings). Every file is written atomically. If a frame cannot be
read, the tool stops with an error that names it; the overlays already
written stay, and the MP4 of the frames before it is still completed. Bad
input (a folder with two frames of one name such as ``f000.png`` and
``f000.jpg``, a folder named like an image, a missing file) and an ``--out``
that cannot be written end the tool with one line ``infer_video.py: error:
...`` and exit status 2 (``--debug`` shows the traceback).
"""
import argparse
import json
import os
import os.path as osp
import sys
import time
from typing import List, Optional

import numpy as np
from mmengine.utils import ProgressBar

from lma_mmseg.apis.video_io import (AtomicVideoWriter, FrameSource,
                                     InputError, colourise, get_palette,
                                     write_png)
from lma_mmseg.fileio import atomic_write_text, output_folder
from lma_mmseg.utils import add_debug_argument, run_main


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
    add_debug_argument(parser)
    return parser.parse_args(argv)


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
    output_folder(args.out, '--out')

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
            write_png(osp.join(overlay_dir, f'{name}.png'), overlay)
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
    atomic_write_text(
        osp.join(args.out, 'summary.json'), json.dumps(summary, indent=2))
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
    run(parse_args(argv))
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main, prog='infer_video.py'))
