"""Run a folder of video frames through an exported streaming step.

Frames (image files, sorted by name; two of one name such as ``f000.png``
and ``f000.jpg`` are refused, their predictions would overwrite each
other) are resized to
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
import os.path as osp
import sys

from lma_mmseg.utils import add_debug_argument, run_main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Stream frames through an exported LMA step')
    parser.add_argument('program_dir', help='folder written by export.py')
    parser.add_argument('frames', help='folder of frames of one video')
    parser.add_argument('--out', required=True, help='prediction folder')
    parser.add_argument(
        '--aoti', action='store_true', help='use the AOTInductor package')
    add_debug_argument(parser)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from lma_mmseg.apis.export import stream_exported
    from lma_mmseg.apis.video_io import list_frames
    from lma_mmseg.fileio import output_folder
    frames = list_frames(args.frames)
    output_folder(args.out, '--out')
    result = stream_exported(
        args.program_dir, frames, args.out, aoti=args.aoti)
    summary = dict(
        frames=result['frames'],
        ms_per_frame=round(result['ms_per_frame'], 3),
        out=osp.abspath(args.out))
    print(json.dumps(summary, indent=2))
    return result


if __name__ == '__main__':
    sys.exit(run_main(main, prog='stream_exported.py'))
