"""Run a folder of video frames through an exported streaming step.

Frames (``.png``/``.jpg``/``.jpeg``/``.bmp``, sorted by name) are resized to
the exported size, normalised as the model's data preprocessor does, run in
order through ``DIR/step.pt2`` (or ``DIR/step_aoti.pt2`` with ``--aoti``),
and each prediction is written as a label PNG (class indices) to ``--out``.
Only ``torch``, ``lma_mmseg`` (for the local attention op) and OpenCV are
needed at run time.

Example::

    python tools/deploy/stream_exported.py work_dirs/export FRAMES_DIR \\
        --out work_dirs/export/preds
"""
import argparse
import json
import os
import os.path as osp
import sys

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Stream frames through an exported LMA step')
    parser.add_argument('program_dir', help='folder written by export.py')
    parser.add_argument('frames', help='folder of frames of one video')
    parser.add_argument('--out', required=True, help='prediction folder')
    parser.add_argument(
        '--aoti', action='store_true', help='use the AOTInductor package')
    return parser.parse_args(argv)


def list_frames(folder: str):
    if not osp.isdir(folder):
        raise FileNotFoundError(f'frame folder {folder!r} not found')
    frames = sorted(
        osp.join(folder, name) for name in os.listdir(folder)
        if name.lower().endswith(IMAGE_EXTENSIONS))
    if not frames:
        raise ValueError(f'no image ({", ".join(IMAGE_EXTENSIONS)}) in '
                         f'{folder!r}')
    return frames


def main(argv=None) -> dict:
    args = parse_args(argv)
    from lma_mmseg.apis.export import stream_exported
    result = stream_exported(
        args.program_dir, list_frames(args.frames), args.out, aoti=args.aoti)
    summary = dict(
        frames=result['frames'],
        ms_per_frame=round(result['ms_per_frame'], 3),
        out=osp.abspath(args.out))
    print(json.dumps(summary, indent=2))
    return result


if __name__ == '__main__':
    try:
        main()
    except (FileNotFoundError, ValueError) as e:
        print(f'stream_exported.py: error: {e}', file=sys.stderr)
        sys.exit(2)
