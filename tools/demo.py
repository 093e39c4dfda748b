"""End-to-end demo of lma_mmseg on synthetic Cityscapes-layout video data.

Steps (each shown with its own progress output):

1. generate the synthetic video data (``tools/make_demo_data.py``) unless
   it is already there;
2. train the single-frame ERFNet (``configs/demo/erfnet_demo.py``), then
   LMA-ERFNet (``configs/demo/lma-erfnet_demo.py``) starting from the trained
   single-frame weights, as the paper does;
3. evaluate both on the demo val split (``tools/test.py``) and time both
   (``tools/benchmark.py``: LMA streaming and clip re-encoding against the
   single-frame model, interleaved in one run);
4. print the leaderboard (``tools/leaderboard.py``), write its plot and a few
   side-by-side images (key frame, single-frame prediction, LMA prediction,
   ground truth).

Usage::

    python tools/demo.py [--data data/demo] [--work-dir work_dirs/demo]

``make demo`` runs it with the defaults.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

import cv2
import numpy as np

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
BASELINE_CONFIG = osp.join(ROOT, 'configs', 'demo', 'erfnet_demo.py')
LMA_CONFIG = osp.join(ROOT, 'configs', 'demo', 'lma-erfnet_demo.py')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train, evaluate and time single-frame ERFNet and '
        'LMA-ERFNet on synthetic video data')
    parser.add_argument(
        '--data', default='data/demo', help='demo data root (generated '
        'there when missing)')
    parser.add_argument(
        '--work-dir', default='work_dirs/demo', help='folder of all outputs')
    parser.add_argument('--seed', type=int, default=0, help='data seed')
    parser.add_argument(
        '--bench-frames', type=int, default=100, help='timed frames')
    parser.add_argument(
        '--bench-warmup', type=int, default=10, help='warm-up frames')
    parser.add_argument(
        '--num-overlays', type=int, default=4,
        help='val samples drawn side by side')
    parser.add_argument(
        '--train-options',
        nargs='+',
        default=[],
        metavar='KEY=VALUE',
        help='extra --cfg-options for both trainings, e.g. '
        'train_cfg.max_iters=100')
    return parser.parse_args(argv)


def run(step: str, cmd: list) -> float:
    """Run one step as a child process, streaming its output."""
    print(f'\n=== {step}\n$ {" ".join(cmd)}', flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f'demo: step "{step}" failed with exit status '
                         f'{proc.returncode}; see its output above')
    seconds = time.perf_counter() - start
    print(f'=== {step}: done in {seconds:.1f} s', flush=True)
    return seconds


def data_ready(data_root: str) -> bool:
    """The generator writes ``meta.json`` last, so its presence means the
    tree is complete."""
    return osp.isfile(osp.join(data_root, 'meta.json'))


def last_checkpoint(work_dir: str) -> str:
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        raise SystemExit(f'demo: no checkpoint was written in {work_dir} '
                         f'(missing {pointer})')
    with open(pointer) as f:
        path = f.read().strip()
    if not osp.isfile(path):
        raise SystemExit(f'demo: {pointer} names {path}, which is missing')
    return path


def data_options(data_root: str) -> list:
    """``--cfg-options`` pointing every dataloader at ``data_root``."""
    return [
        f'{split}_dataloader.dataset.data_root={data_root}'
        for split in ('train', 'val', 'test')
    ]


def colorize(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """BGR image of a trainId map (255 and unknown ids in black)."""
    out = np.zeros(label.shape + (3, ), np.uint8)
    valid = label < len(palette)
    out[valid] = palette[label[valid]][:, ::-1]
    return out


def titled(image: np.ndarray, title: str) -> np.ndarray:
    bar = np.full((18, image.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, title, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, image], axis=0)


def write_overlays(args, baseline_ckpt: str, lma_ckpt: str) -> list:
    """Side-by-side images of the first val samples: key frame, single-frame
    ERFNet, LMA-ERFNet (streamed over the memory frames) and ground truth."""
    from mmengine.config import Config
    from mmseg.registry import DATASETS

    from lma_mmseg.apis import StreamingSegmenter, init_model
    from lma_mmseg.fileio import atomic_write_bytes

    options = dict(
        item.split('=', 1) for item in data_options(args.data))
    lma = init_model(LMA_CONFIG, lma_ckpt, device='cpu', cfg_options=options)
    baseline = init_model(
        BASELINE_CONFIG, baseline_ckpt, device='cpu', cfg_options=options)
    cfg = Config.fromfile(LMA_CONFIG)
    cfg.merge_from_dict(options)
    dataset = DATASETS.build(cfg.val_dataloader.dataset)
    palette = np.array(dataset.metainfo['palette'], np.uint8)
    out_dir = osp.join(args.work_dir, 'overlays')
    os.makedirs(out_dir, exist_ok=True)
    lma_seg, base_seg = StreamingSegmenter(lma), StreamingSegmenter(baseline)
    written = []
    for idx in range(min(args.num_overlays, len(dataset))):
        info = dataset.get_data_info(idx)
        lma_seg.reset()
        for path in info['clip_paths']:
            lma_pred = lma_seg(path)
        base_pred = base_seg(info['img_path'])
        key = cv2.imread(info['img_path'])
        gt = cv2.imread(info['seg_map_path'], cv2.IMREAD_UNCHANGED)
        panels = [
            titled(key, 'key frame'),
            titled(
                colorize(base_pred.pred_sem_seg.data[0].numpy(), palette),
                'ERFNet (single frame)'),
            titled(
                colorize(lma_pred.pred_sem_seg.data[0].numpy(), palette),
                'LMA-ERFNet'),
            titled(colorize(gt, palette), 'ground truth')
        ]
        image = np.concatenate(panels, axis=1)
        path = osp.join(out_dir,
                        osp.basename(info['img_path']).replace(
                            '_leftImg8bit.png', '_demo.png'))
        ok, buf = cv2.imencode('.png', image)
        if not ok:
            raise RuntimeError(f'could not encode {path}')
        atomic_write_bytes(path, buf.tobytes())
        written.append(path)
    return written


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    py = sys.executable
    tools = osp.join(ROOT, 'tools')
    wd = args.work_dir
    runs = osp.join(wd, 'runs')
    timings = {}

    if data_ready(args.data):
        print(f'demo: reusing the demo data in {args.data}')
    else:
        timings['data'] = run('generate demo data', [
            py, osp.join(tools, 'make_demo_data.py'), '--out', args.data,
            '--seed', str(args.seed)
        ])

    base_wd, lma_wd = osp.join(wd, 'erfnet'), osp.join(wd, 'lma-erfnet')
    timings['train ERFNet'] = run('train single-frame ERFNet', [
        py, osp.join(tools, 'train.py'), BASELINE_CONFIG, '--work-dir',
        base_wd, '--cfg-options', *data_options(args.data),
        *args.train_options
    ])
    base_ckpt = last_checkpoint(base_wd)
    timings['train LMA-ERFNet'] = run('train LMA-ERFNet from ERFNet', [
        py, osp.join(tools, 'train.py'), LMA_CONFIG, '--work-dir', lma_wd,
        '--cfg-options', f'load_from={base_ckpt}', *data_options(args.data),
        *args.train_options
    ])
    lma_ckpt = last_checkpoint(lma_wd)

    for name, config, ckpt, run_wd in (('erfnet', BASELINE_CONFIG, base_ckpt,
                                        base_wd), ('lma-erfnet', LMA_CONFIG,
                                                   lma_ckpt, lma_wd)):
        timings[f'test {name}'] = run(f'evaluate {name} on demo val', [
            py, osp.join(tools, 'test.py'), config, ckpt, '--work-dir',
            run_wd, '--out', osp.join(runs, name), '--cfg-options',
            *data_options(args.data)
        ])

    bench = [
        '--device', 'cpu', '--shape', '128', '256', '--frames',
        str(args.bench_frames), '--warmup', str(args.bench_warmup)
    ]
    # one interleaved run times both models, so their rows are comparable
    lma_bench = osp.join(runs, 'lma-erfnet', 'benchmark.json')
    timings['benchmark'] = run('time LMA-ERFNet against ERFNet', [
        py, osp.join(tools, 'benchmark.py'), LMA_CONFIG, '--checkpoint',
        lma_ckpt, '--baseline', BASELINE_CONFIG, '--baseline-checkpoint',
        base_ckpt, *bench, '--out', lma_bench, '--baseline-out',
        osp.join(runs, 'erfnet', 'benchmark.json')
    ])
    md = osp.join(wd, 'leaderboard.md')
    timings['leaderboard'] = run('leaderboard', [
        py, osp.join(tools, 'leaderboard.py'),
        osp.join(runs, 'erfnet'), osp.join(runs, 'lma-erfnet'), '--out-dir',
        wd, '--md', md, '--title', 'Synthetic video demo (128x256, CPU)'
    ])

    print('\n=== side-by-side images', flush=True)
    overlays = write_overlays(args, base_ckpt, lma_ckpt)

    results = {}
    for name in ('erfnet', 'lma-erfnet'):
        with open(osp.join(runs, name, 'cityscapes_metrics.json')) as f:
            results[name] = json.load(f)
    miou = {k: v['mIoU'] for k, v in results.items()}
    total = time.perf_counter() - start
    with open(lma_bench) as f:
        overhead = {o['mode']: o for o in json.load(f)['overhead']}
    print('\n=== lma_mmseg demo: summary')
    with open(md) as f:
        print(f.read())
    print(f'val mIoU: ERFNet {miou["erfnet"]:.2f}, LMA-ERFNet '
          f'{miou["lma-erfnet"]:.2f} '
          f'({miou["lma-erfnet"] - miou["erfnet"]:+.2f})')
    for mode, label in (('streaming', 'streaming'),
                        ('reencode', 're-encoding the clip')):
        if mode in overhead:
            print(f'LMA-ERFNet {label} vs ERFNet, timed interleaved: '
                  f'x{overhead[mode]["ratio"]:.2f} '
                  f'({overhead[mode]["ms"]:+.1f} ms/frame, median)')
    steps = ', '.join(f'{k} {v:.0f} s' for k, v in timings.items())
    print(f'step times: {steps}')
    print(f'total: {total / 60:.1f} min')
    print(f'leaderboard: {md}, {osp.join(wd, "leaderboard.csv")}, '
          f'{osp.join(wd, "leaderboard.png")}')
    print('side-by-side images (key frame | ERFNet | LMA-ERFNet | ground '
          'truth):')
    for path in overlays:
        print(f'  {path}')


if __name__ == '__main__':
    main()
