"""Train a segmentor (single-frame or Local Memory Attention) with mmengine.

The same command line as mmseg's ``tools/train.py``; ``lma_mmseg`` is
imported first, so its components are registered even for configs without
``custom_imports``. Example::

    python tools/train.py configs/demo/lma-erfnet_demo.py
    python tools/train.py CONFIG --work-dir work_dirs/x --amp \\
        --cfg-options train_cfg.max_iters=2000 load_from=ckpt.pth
    python -m torch.distributed.run --nproc_per_node=4 tools/train.py \\
        CONFIG --launcher pytorch
"""
import argparse
import logging
import os
import os.path as osp
import sys

# OpenMP threads that spin while waiting make CPU training many times slower
# when the cores are shared with other processes; passive waiting costs
# little on an idle machine. Set OMP_WAIT_POLICY to override.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

# Let ``python tools/train.py`` find the package of this checkout when it is
# not installed.
_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import lma_mmseg  # noqa: E402,F401  (registers components, compat shims)
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.logging import print_log  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from mmseg.registry import RUNNERS  # noqa: E402

from lma_mmseg.engine import (parse_launcher_args,  # noqa: E402
                              setup_cpu_distributed, shutdown_distributed)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        action='store_true',
        default=False,
        help='resume from the latest checkpoint in the work_dir automatically')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file. If the value to '
        'be overwritten is a list, it should be like key="[a,b]" or key=a,b '
        'It also allows nested list/tuple values, e.g. key="[(a,b),(c,d)]" '
        'Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    return parse_launcher_args(parser, argv)


def build_cfg(args):
    """Load the config and apply the command-line options to it."""
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'train.py: config file not found: '
                                f'{args.config}')
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    # work_dir priority: command line > config > config file name.
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])

    if args.amp:
        optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if optim_wrapper == 'AmpOptimWrapper':
            print_log(
                'AMP training is already enabled in your config.',
                logger='current',
                level=logging.WARNING)
        elif optim_wrapper != 'OptimWrapper':
            raise ValueError(
                '`--amp` is only supported when the optimizer wrapper type is '
                f'`OptimWrapper`, but {args.config} uses {optim_wrapper}.')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'

    cfg.resume = args.resume
    return cfg


def main(argv=None):
    args = parse_args(argv)
    cfg = build_cfg(args)
    # torchrun on a machine without CUDA: gloo and a CPU-capable DDP wrapper
    setup_cpu_distributed(cfg)
    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)
    runner.train()


if __name__ == '__main__':
    try:
        main()
    finally:
        shutdown_distributed()
