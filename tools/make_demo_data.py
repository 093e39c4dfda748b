# Copyright (c) lma_mmseg contributors. All rights reserved.
"""Write the synthetic video segmentation demo data in the Cityscapes layout.

The data and its layout are described in
:mod:`lma_mmseg.datasets.prep.synthetic`
(a benchmark for the memory mechanism, not Cityscapes). Every file is written
atomically.

Example::

    python tools/make_demo_data.py --out data/demo --seed 0
"""
import argparse
import json
import os.path as osp
import sys

# Let ``python tools/make_demo_data.py`` find the package of this checkout
# when it is not installed.
_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import lma_mmseg.datasets.prep.synthetic as synthetic  # noqa: E402
from lma_mmseg.datasets.prep.degradations import DEGRADATIONS  # noqa: E402
from lma_mmseg.fileio import atomic_write_text  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Write the synthetic video segmentation demo data in the '
        'Cityscapes video layout (a benchmark for the memory mechanism, not '
        'Cityscapes).')
    parser.add_argument('--out', default='data/demo', help='output root')
    parser.add_argument(
        '--size',
        type=int,
        nargs=2,
        default=(128, 256),
        metavar=('H', 'W'),
        help='frame size')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-train', type=int, default=60)
    parser.add_argument('--num-val', type=int, default=20)
    parser.add_argument('--num-test', type=int, default=10)
    parser.add_argument(
        '--frames',
        choices=synthetic.FRAME_CHOICES,
        default='auto',
        help="'all': frames 0..29 of every snippet; 'memory': frames 10..19; "
        "'auto': frames 0..29 for the first snippet of each city, 10..19 for "
        'the others')
    parser.add_argument(
        '--hidden-range',
        type=float,
        nargs=2,
        default=(0.3, 0.5),
        metavar=('LO', 'HI'),
        help='fraction of the annotated frame hidden by glare/fog')
    parser.add_argument('--noise-std', type=float, default=6.0)
    parser.add_argument(
        '--hide',
        choices=synthetic.HIDE_MODES,
        default='regions',
        help="hidden area of the annotated frame: 'blocks' (random "
        "rectangles/ellipses) or 'regions' (whole regions)")
    parser.add_argument(
        '--mode',
        choices=list(DEGRADATIONS),
        default='glare',
        help="degradation of the annotated frame: 'glare' (glare/fog over "
        "the hidden area, the demo data), 'occlusion' (moving grey "
        "occluders, on earlier frames too), 'blur' (motion blur and low "
        "contrast), 'noise' (blocks of colour noise), 'dropout' "
        '(under-exposure)')
    parser.add_argument(
        '--severity',
        type=float,
        default=1.0,
        help='strength of the degradation in [0, 1] (0: clean key frames)')
    parser.add_argument(
        '--speeds',
        type=float,
        nargs='+',
        metavar='V',
        help='add one object per speed (px/frame at 128 px height, relative '
        'to the scene; 0: a small static object) to every snippet')
    parser.add_argument('--json', help='also write the summary to this file')
    return parser.parse_args(argv)


def main(argv=None):
    import shlex
    args = parse_args(argv)
    command = 'python tools/make_demo_data.py ' + ' '.join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    try:
        settings = synthetic.DemoDataSettings(
            size=tuple(args.size),
            seed=args.seed,
            num_train=args.num_train,
            num_val=args.num_val,
            num_test=args.num_test,
            frames=args.frames,
            hidden_range=tuple(args.hidden_range),
            noise_std=args.noise_std,
            hide=args.hide,
            mode=args.mode,
            severity=args.severity,
            speeds=args.speeds)
    except ValueError as exc:
        raise SystemExit(f'make_demo_data.py: error: {exc}')
    summary = synthetic.make_demo_data(
        args.out, settings, command=command, verbose=True)
    print(
        f'\nWrote synthetic demo data to {args.out} '
        f'({summary["size"][0]}x{summary["size"][1]}, seed {args.seed}, '
        f'frames {args.frames}) in {summary["seconds"]:.1f} s')
    print(f'{"split":<6} {"snippets":>8} {"files":>6}  cities')
    for split, info in summary['splits'].items():
        print(
            f'{split:<6} {info["snippets"]:>8} {info["files"]:>6}  '
            f'{", ".join(info["cities"])}')
    if 'hidden_fraction' in summary:
        hf = summary['hidden_fraction']
        what = 'glare/fog' if args.mode == 'glare' else args.mode
        print(
            f'key-frame pixels hidden by {what}: mean {hf["mean"]:.1%} '
            f'(min {hf["min"]:.1%}, max {hf["max"]:.1%})')
    if args.json:
        atomic_write_text(args.json, json.dumps(summary, indent=2))


if __name__ == '__main__':
    main()
