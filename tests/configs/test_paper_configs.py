"""The paper-recipe configs train with mmengine's Runner.

Each config (LMA-ERFNet and LMA-PSPNet-101 with the authors' recipe, and
the single-frame ERFNet twin) runs two epochs of one iteration on a tiny
synthetic Cityscapes-video tree, with only sizes, paths and loader settings
overridden: the same pipelines (resize, clip-consistent flip and
translation), loss, optimizer, ReduceOnPlateauLR on the training loss,
validation at the working resolution and at full resolution, and the best
checkpoint on val mIoU; the LMA models then test. PSPNet-101 keeps its
structure (ResNetV1c-D8, the memory neck on layer4 with the raw feature as
value, GatedDownFusion, the pyramid pooling head) at ResNet-18 depth and a
fraction of the width, so that the wiring is tested in seconds.
"""
import json
import os
import os.path as osp

import cv2
import numpy as np
import pytest
from mmengine.config import Config
from mmengine.runner import Runner

import lma_mmseg  # noqa: F401
from lma_mmseg.apis import check_memory_offsets

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PAPER_CONFIGS = [
    'configs/lma/lma-erfnet_paper_2xb5-50e_cityscapes-seq-512x1024.py',
    'configs/erfnet/erfnet-split_paper_2xb5-50e_cityscapes-seq-512x1024.py',
    'configs/lma/lma-pspnet_r101-d8_paper_6xb1-50e_'
    'cityscapes-seq-1025x2049.py',
]
FULL = (64, 128)  # (h, w) of the synthetic frames and label files
WORK = (64, 32)  # (w, h) working size replacing 1024x512 / 2049x1025
CITY = 'aachen'


def _write_split(root, split, num, rng):
    for seq in range(num):
        for frame in range(15, 20):
            name = f'{CITY}_{seq:06d}_{frame:06d}'
            path = osp.join(root, 'leftImg8bit_sequence', split, CITY,
                            f'{name}_leftImg8bit.png')
            os.makedirs(osp.dirname(path), exist_ok=True)
            cv2.imwrite(path, rng.integers(0, 256, (*FULL, 3), np.uint8))
        label = rng.integers(0, 19, FULL, np.uint8)
        label[:4] = 255
        path = osp.join(root, 'gtFine', split, CITY,
                        f'{name}_gtFine_labelTrainIds.png')
        os.makedirs(osp.dirname(path), exist_ok=True)
        cv2.imwrite(path, label)


@pytest.fixture(scope='module')
def tiny_cityscapes(tmp_path_factory):
    """4 train and 2 val snippets, frames 15..19, frame 19 annotated."""
    root = str(tmp_path_factory.mktemp('cityscapes'))
    rng = np.random.default_rng(0)
    _write_split(root, 'train', 4, rng)
    _write_split(root, 'val', 2, rng)
    return root


def _shrink_resizes(pipeline):
    found = 0
    for t in pipeline:
        if t['type'] == 'Resize':
            assert t['keep_ratio'] is False and t['backend'] == 'pillow'
            t['scale'] = WORK
            found += 1
        found += _shrink_resizes(t.get('transforms', []))
    return found


def _tiny_cfg(rel, data_root, work_dir):
    cfg = Config.fromfile(osp.join(ROOT, rel))
    cfg.work_dir = work_dir
    # own MessageHub and visualizer (scalars.json) for each in-process run
    cfg.experiment_name = 'paper_' + osp.splitext(osp.basename(rel))[0]
    cfg.visualizer.name = cfg.experiment_name
    cfg.load_from = None
    cfg.model.data_preprocessor.size = (WORK[1], WORK[0])
    for name in ('train', 'val', 'test'):
        loader = cfg[f'{name}_dataloader']
        loader.num_workers = 0
        loader.persistent_workers = False
        loader.dataset.data_root = data_root
        assert _shrink_resizes(loader.dataset.pipeline) == 1
    # two epochs of one iteration: the scheduler (end = max_epochs) steps
    # after the first validation
    cfg.train_dataloader.batch_size = 4
    cfg.train_cfg.max_epochs = 2
    cfg.default_hooks.logger.interval = 1
    if 'pspnet' in rel:
        _shrink_pspnet(cfg.model)
    return cfg


def _shrink_pspnet(model):
    """PSPNet-101's structure at ResNet-18 depth, layer4 128 wide."""
    assert model.backbone.type == 'ResNetV1c' and model.backbone.depth == 101
    assert tuple(model.backbone.dilations) == (1, 1, 2, 4)
    model.backbone.update(depth=18, stem_channels=16, base_channels=16)
    model.neck.update(in_channels=128, key_channels=16)
    model.neck.fusion.channels = 32
    model.decode_head.update(in_channels=128, channels=32)


def _record_memory_frames(model):
    """Log ``(training, T)`` for every neck call that reads a memory."""
    seen = []

    def hook(module, args, kwargs):
        memory = kwargs.get('memory')
        if memory is not None:
            seen.append((module.training, memory.keys.shape[1]))

    model.neck.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


# memory frames per clip: (training, validation, test)
MEMORY_FRAMES = {
    PAPER_CONFIGS[0]: (3, 3, 4),  # --stm-queue-size 3 / 3 / 4
    PAPER_CONFIGS[2]: (3, 3, 3),
}


@pytest.mark.parametrize('rel', PAPER_CONFIGS)
def test_paper_config_trains_two_iterations(rel, tiny_cityscapes, tmp_path):
    cfg = _tiny_cfg(rel, tiny_cityscapes, str(tmp_path / 'work'))
    runner = Runner.from_cfg(cfg)
    lma = 'lma' in osp.basename(rel)
    if lma:
        seen = _record_memory_frames(runner.model)
    runner.train()
    assert runner.iter == 2 and runner.epoch == 2

    # ReduceOnPlateauLR was stepped with the epoch's training loss
    (scheduler, ) = runner.param_schedulers
    assert type(scheduler).__name__ == 'ReduceOnPlateauLR'
    assert scheduler.monitor == 'train_loss'
    assert scheduler.last_step == 0  # stepped once, with metrics
    lr = runner.optim_wrapper.get_lr()['lr'][0]
    assert lr == pytest.approx(2e-4)  # no plateau yet

    # both evaluations ran; the best checkpoint is the val mIoU's
    (scalars, ) = [
        osp.join(dp, f) for dp, _, fs in os.walk(cfg.work_dir) for f in fs
        if f == 'scalars.json'
    ]
    with open(scalars) as f:
        records = [json.loads(line) for line in f if line.strip()]
    vals = [r for r in records if 'mIoU' in r]
    assert len(vals) == 2
    for val in vals:
        assert 0 <= val['mIoU'] <= 100 and 0 <= val['full_res/mIoU'] <= 100
    # the scheduler saw the first epoch's mean training loss
    assert vals[0]['train_loss'] == pytest.approx(scheduler.best)
    best = max(range(2), key=lambda i: vals[i]['mIoU'])
    assert osp.isfile(
        osp.join(cfg.work_dir, f'best_mIoU_epoch_{best + 1}.pth'))
    assert osp.isfile(osp.join(cfg.work_dir, 'epoch_2.pth'))
    assert runner.message_hub.get_info('best_score') == \
        pytest.approx(vals[best]['mIoU'])

    if lma:
        assert runner.model.freeze_mode == 'train'
        train_t, val_t, test_t = MEMORY_FRAMES[rel]
        # two training steps, then one validation per epoch of 2 clips
        assert sorted(seen) == [(False, val_t)] * 4 + [(True, train_t)] * 2
        seen.clear()
        runner.test()
        assert seen == [(False, test_t)] * 2


ERFNET_WEIGHTS = [
    2.8149, 6.9850, 3.7890, 9.9428, 9.7702, 9.5111, 10.3114, 10.0265, 4.6323,
    9.5608, 7.8698, 9.5169, 10.3737, 6.6616, 10.2605, 10.2879, 10.2898,
    10.4054, 10.1381
]


def _transform_types(pipeline):
    types = []
    for t in pipeline:
        types.append(t['type'])
        types += _transform_types(t.get('transforms', []))
    return types


@pytest.mark.parametrize('rel, size, val_offsets, test_offsets', [
    (PAPER_CONFIGS[0], (1024, 512), (-3, -2, -1), (-4, -3, -2, -1)),
    (PAPER_CONFIGS[1], (1024, 512), (), ()),
    (PAPER_CONFIGS[2], (2049, 1025), (-3, -2, -1), (-3, -2, -1)),
])
def test_paper_config_settings(rel, size, val_offsets, test_offsets):
    """The authors' recipe, point by point."""
    cfg = Config.fromfile(osp.join(ROOT, rel))
    model = cfg.model
    lma = model.type == 'VideoEncoderDecoder'
    # whole frames resized, flip and +-2 px translation only
    train = cfg.train_dataloader.dataset
    types = _transform_types(train.pipeline)
    assert types.count('Resize') == 1 and 'RandomFlip' in types
    assert 'RandomTranslate' in types
    for absent in ('RandomResize', 'RandomCrop', 'PhotoMetricDistortion'):
        assert absent not in types
    for loader in (cfg.train_dataloader, cfg.val_dataloader,
                   cfg.test_dataloader):
        pipeline = loader.dataset.pipeline
        resizes = [
            t for t in pipeline + sum(
                [t.get('transforms', []) for t in pipeline], [])
            if t['type'] == 'Resize'
        ]
        assert [tuple(t['scale']) for t in resizes] == [size]
    assert 'ResetOriShape' in _transform_types(cfg.val_dataloader.dataset
                                               .pipeline)
    translate = [
        t for t in train.pipeline + sum(
            [t.get('transforms', []) for t in train.pipeline], [])
        if t['type'] == 'RandomTranslate'
    ][0]
    # the authors' label fill: 255 where a positive shift uncovers the
    # label, 0 (road) where a negative one does
    assert (translate['max_shift'], translate['img_fill'],
            translate['seg_fill'], translate['seg_fill_negative']) == \
        (2, 0, 255, 0)
    # T=3 for training and for the validation that picks the best epoch;
    # 4 (ERFNet) / 3 (PSPNet) at test and in streaming
    if lma:
        assert tuple(train.frame_offsets) == (-3, -2, -1)
        assert model.neck.memory_length == len(test_offsets)
        assert model.neck.window == 21 and model.neck.scale == 1.0
        assert not model.neck.get('position_bias', False)
        assert model['freeze_mode'] == 'train'
        assert tuple(model['freeze']) == ('backbone', 'decode_head')
    assert tuple(cfg.val_dataloader.dataset.frame_offsets) == val_offsets
    assert tuple(cfg.test_dataloader.dataset.frame_offsets) == test_offsets
    for key in ('data_prefix', 'pipeline', 'data_root', 'test_mode'):
        assert cfg.val_dataloader.dataset[key] == \
            cfg.test_dataloader.dataset[key], key
    # the test-config check (tools/test.py, init_model) accepts it
    check_memory_offsets(cfg)
    # no dropout in the ERFNet decoder (the authors' has none)
    if 'erfnet' in rel:
        assert model.decode_head.dropout_ratio == 0
    # class-weighted cross-entropy with ERFNet's weights (both models)
    loss = model.decode_head.loss_decode
    assert loss.type == 'WeightedCrossEntropyLoss'
    assert loss.class_weight == pytest.approx(ERFNET_WEIGHTS, abs=1e-4)
    if 'pspnet' in rel:
        assert model.auxiliary_head is None
        assert model.neck.fusion.type == 'GatedDownFusion'
        assert model.neck.fusion.channels == 256
        assert model.neck.fusion.down_bias is True
    elif lma:
        fusion = model.neck.fusion
        assert (fusion.type, fusion.gate_channels, fusion.proj_kernel_size,
                fusion.proj_bias, fusion.dropout_ratio) == \
            ('GatedFusion', 128, 3, True, 0.3)
    # Adam 2e-4, 50 epochs, x0.8 on a training-loss plateau, best val mIoU
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, tuple(opt.betas), opt.weight_decay) == \
        ('Adam', 2e-4, (0.9, 0.999), 1e-4)
    # 2 GPUs x 5 clips (ERFNet), 6 GPUs x 1 clip (PSPNet-101)
    assert cfg.train_dataloader.batch_size == (1 if 'pspnet' in rel else 5)
    assert cfg.train_cfg.type == 'EpochBasedTrainLoop'
    assert (cfg.train_cfg.max_epochs, cfg.train_cfg.val_interval) == (50, 1)
    (sched, ) = cfg.param_scheduler
    assert (sched.type, sched.monitor, sched.factor, sched.rule) == \
        ('ReduceOnPlateauLR', 'train_loss', 0.8, 'less')
    assert [h.type for h in cfg.custom_hooks] == ['TrainLossMetricHook']
    ckpt = cfg.default_hooks.checkpoint
    assert (ckpt.type, ckpt.save_best, ckpt.rule) == \
        ('AtomicCheckpointHook', 'mIoU', 'greater')
    assert [e.type for e in cfg.val_evaluator] == \
        ['IoUMetric', 'FullResIoUMetric']
