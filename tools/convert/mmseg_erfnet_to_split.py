"""Convert an mmseg ERFNet checkpoint to the split ERFNet of lma_mmseg.

See :mod:`lma_mmseg.models.backbones.erfnet_convert` for the key mapping.
Usage::

    python tools/convert/mmseg_erfnet_to_split.py SRC DST

SRC may be a path or a URL (anything mmengine's checkpoint loader reads);
DST is written atomically.
"""
import argparse
import os.path as osp
import sys

from lma_mmseg.models.backbones.erfnet_convert import convert_checkpoint


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert an mmseg ERFNet checkpoint to the split '
        'ERFNetEncoder + ERFNetDecoderHead layout of lma_mmseg')
    parser.add_argument('src', help='mmseg ERFNet checkpoint (path or URL)')
    parser.add_argument('dst', help='output checkpoint path')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if osp.abspath(args.src) == osp.abspath(args.dst):
        sys.exit('mmseg_erfnet_to_split: src and dst must differ')
    try:
        num = convert_checkpoint(args.src, args.dst)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f'mmseg_erfnet_to_split: {e}')
    print(f'Wrote {num} tensors to {args.dst}')


if __name__ == '__main__':
    main()
