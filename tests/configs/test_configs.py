"""Every config of the repository builds and trains one step on CPU.

For each LMA config: the model builds, one training iteration on a tiny
synthetic clip (through the config's own data preprocessor) gives a finite
loss and gradients exactly where they should be (the frozen parts get none),
and a lone image (no memory) is segmented. Single-frame baselines build and
train one step as well. Checkpoints of the single-frame models load into the
LMA models with only the neck's keys missing.
"""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules

import lma_mmseg  # noqa: F401
from helpers import ROOT
from lma_mmseg.models.backbones.erfnet_convert import convert_state_dict

register_all_modules(init_default_scope=True)

CFG_DIRS = ('lma', 'erfnet', 'pspnet', 'demo', 'segformer',
            'deeplabv3plus')
ALL_CONFIGS = sorted(
    osp.relpath(p, ROOT) for d in CFG_DIRS
    for p in glob.glob(osp.join(ROOT, 'configs', d, '*.py')))
LMA_CONFIGS = [
    'configs/lma/lma-erfnet_4xb4-160k_cityscapes-seq-512x1024.py',
    'configs/lma/lma-pspnet_r50-d8_4xb2-80k_cityscapes-seq-512x1024.py',
    'configs/lma/lma-pspnet_r101-d8_4xb2-80k_cityscapes-seq-512x1024.py',
    'configs/lma/lma-deeplabv3plus_r50-d8_4xb2-80k_cityscapes-seq-512x1024.py',
    'configs/lma/lma-segformer_mit-b0_8xb1-160k_cityscapes-seq-512x1024.py',
    'configs/demo/lma-erfnet_demo.py',
    'configs/demo/lma-erfnet_demo-light.py',
    'configs/lma/lma-segformer_mit-b1_8xb2-160k_vspw-480x480.py',
    'configs/lma/lma-deeplabv3plus_r50-d8_4xb4-80k_vspw-480x480.py',
    'configs/lma/lma-erfnet_paper_2xb5-50e_cityscapes-seq-1024x512.py',
    'configs/lma/lma-pspnet_r101-d8_paper_6xb1-50e_'
    'cityscapes-seq-2049x1025.py',
]
FRAME_CONFIGS = [
    'configs/erfnet/erfnet_fcn_4xb4-160k_cityscapes-512x1024.py',
    'configs/erfnet/erfnet-split_fcn_4xb4-160k_cityscapes-512x1024.py',
    'configs/pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py',
    'configs/pspnet/pspnet_r101-d8_4xb2-80k_cityscapes-512x1024.py',
    'configs/demo/erfnet_demo.py',
    'configs/segformer/segformer_mit-b1_8xb2-160k_vspw-480x480.py',
    'configs/deeplabv3plus/deeplabv3plus_r50-d8_4xb4-80k_vspw-480x480.py',
    'configs/erfnet/erfnet-split_paper_2xb5-50e_cityscapes-seq-1024x512.py',
]
NUM_CLASSES = 19
H, W = 64, 64


def _cfg(rel):
    return Config.fromfile(osp.join(ROOT, rel))


def _build(rel, seed=0, **model_overrides):
    """Build the model of a config on CPU (SyncBN -> BN, no downloads),
    its random weights drawn from ``seed``."""
    model_cfg = _cfg(rel).model
    model_cfg.pretrained = None
    model_cfg.backbone.pop('init_cfg', None)
    # Tiny inputs: pad to the input size rather than the training crop.
    model_cfg.data_preprocessor.size = (H, W)
    model_cfg.update(model_overrides)
    torch.manual_seed(seed)
    model = revert_sync_batchnorm(MODELS.build(model_cfg))
    model.init_weights()
    return model


def _data(num_frames, batch=2, seed=0):
    """Packed samples as the dataloader gives them: uint8 clips
    (T+1, 3, H, W) with the key frame last, or frames (3, H, W)."""
    gen = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(batch):
        shape = (3, H, W) if num_frames is None else (num_frames, 3, H, W)
        inputs.append(torch.randint(0, 256, shape, generator=gen).byte())
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, NUM_CLASSES, (1, H, W), generator=gen))
        sample.set_metainfo(
            dict(img_shape=(H, W), ori_shape=(H, W), pad_shape=(H, W)))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _train_step(model, data):
    model.train()
    batch = model.data_preprocessor(data, training=True)
    losses = model.loss(batch['inputs'], batch['data_samples'])
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss), losses
    loss.backward()
    return batch, losses


@pytest.mark.parametrize('rel', ALL_CONFIGS)
def test_config_parses_with_plugin_import(rel):
    cfg = _cfg(rel)
    assert cfg.custom_imports.imports == ['lma_mmseg']
    assert cfg.custom_imports.allow_failed_imports is False
    assert cfg.default_scope == 'mmseg'
    for key in ('model', 'train_dataloader', 'val_dataloader', 'train_cfg',
                'optim_wrapper', 'val_evaluator'):
        assert key in cfg, f'{rel} has no {key}'


def test_every_config_is_tested():
    assert set(ALL_CONFIGS) == set(LMA_CONFIGS) | set(FRAME_CONFIGS)


@pytest.mark.parametrize('rel', LMA_CONFIGS)
def test_lma_config_trains_only_the_memory(rel):
    model = _build(rel)
    cfg = _cfg(rel)
    if getattr(model.neck, 'residual', False):
        # identity at init: at alpha = 0 only alpha gets a gradient; a
        # trained alpha lets it reach the heads
        with torch.no_grad():
            model.neck.residual_scale.fill_(0.5)
    assert type(model).__name__ == 'VideoEncoderDecoder'
    assert type(model.data_preprocessor).__name__ == \
        'VideoSegDataPreProcessor'
    assert model.freeze_memory_encoder
    offsets = cfg.train_dataloader.dataset.frame_offsets
    # VSPW: CFFM's strided offsets
    assert tuple(offsets) == ((-9, -6, -3) if 'vspw' in rel else (-3, -2, -1))
    batch, losses = _train_step(model, _data(len(offsets) + 1))
    assert batch['inputs'].shape == (2, len(offsets) + 1, 3, H, W)
    assert 'decode.loss_ce' in losses

    frozen = tuple(cfg.model['freeze'] or ())
    if not rel.startswith('configs/demo/'):
        # the paper's setting: only the memory heads and the fusion train
        assert {'backbone', 'decode_head'} <= set(frozen)
    elif rel == 'configs/demo/lma-erfnet_demo.py':
        # the suite's recipe: everything trains, memory frames are encoded
        # as at inference
        assert frozen == () and model.memory_encoder_mode == 'eval'
    else:
        assert frozen == ('backbone', )
    for name, p in model.named_parameters():
        if name.split('.')[0] in frozen:
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.requires_grad and p.grad is not None, name
    # the memory heads learn through the attention, the query heads directly
    for head in ('memory_key', 'query_key', 'memory_value', 'query_value'):
        module = getattr(model.neck, head)
        if isinstance(module, torch.nn.Conv2d):
            assert module.weight.grad.abs().sum() > 0, head
    # frozen modules stay in eval mode (BN statistics, dropout), or follow
    # the training mode with freeze_mode='train' (the paper recipe)
    in_train_mode = cfg.model.get('freeze_mode', 'eval') == 'train'
    for name in frozen:
        assert getattr(model, name).training == in_train_mode, name
    assert model.neck.training


@pytest.mark.parametrize('rel', LMA_CONFIGS)
def test_lma_config_segments_a_lone_image(rel):
    model = _build(rel).eval()
    data = _data(None, batch=1)
    with torch.no_grad():
        batch = model.data_preprocessor(data, training=False)
        assert batch['inputs'].shape == (1, 3, H, W)
        (result, ) = model.predict(batch['inputs'], batch['data_samples'])
    assert result.pred_sem_seg.data.shape == (1, H, W)
    assert result.seg_logits.data.shape == (
        model.decode_head.num_classes, H, W)
    assert torch.isfinite(result.seg_logits.data).all()


def test_lma_erfnet_full_finetuning_reaches_the_key_frame_encoder():
    model = _build(
        'configs/lma/lma-erfnet_4xb4-160k_cityscapes-seq-512x1024.py',
        freeze=None)
    _train_step(model, _data(4))
    for name, p in model.named_parameters():
        assert p.grad is not None, name
    assert model.backbone.encoder[0].conv.weight.grad.abs().sum() > 0


def test_lma_erfnet_cityscapes_settings():
    cfg = _cfg('configs/lma/lma-erfnet_4xb4-160k_cityscapes-seq-512x1024.py')
    neck = cfg.model.neck
    assert (neck.in_channels, neck.key_channels, neck.value_channels,
            neck.window, neck.in_index) == (128, 16, 64, 21, 0)
    assert neck.fusion.type == 'GatedFusion'
    assert tuple(cfg.train_dataloader.dataset.frame_offsets) == (-3, -2, -1)
    assert tuple(
        cfg.val_dataloader.dataset.frame_offsets) == (-4, -3, -2, -1)
    assert neck.memory_length == 4
    assert cfg.optim_wrapper.optimizer.type == 'Adam'
    assert cfg.optim_wrapper.optimizer.lr == 2e-4
    assert cfg.optim_wrapper.optimizer.weight_decay == 1e-4
    assert cfg.load_from
    assert cfg.train_dataloader.dataset.pipeline[1].transforms[1].crop_size \
        == (512, 1024)


@pytest.mark.parametrize('depth', ['r50', 'r101'])
def test_lma_pspnet_cityscapes_settings(depth):
    cfg = _cfg(f'configs/lma/lma-pspnet_{depth}-d8_4xb2-80k_'
               'cityscapes-seq-512x1024.py')
    neck = cfg.model.neck
    assert (neck.in_channels, neck.key_channels, neck.value_channels,
            neck.window, neck.in_index) == (2048, 128, None, 21, 3)
    assert neck.fusion.type == 'GatedDownFusion'
    assert cfg.model.auxiliary_head.in_index == 2
    assert cfg.model.backbone.depth == int(depth[1:])
    assert depth in cfg.load_from and 'pspnet' in cfg.load_from


@pytest.mark.parametrize('rel', FRAME_CONFIGS)
def test_single_frame_config_trains_one_step(rel):
    model = _build(rel)
    _, losses = _train_step(model, _data(None))
    assert 'decode.loss_ce' in losses
    for name, p in model.named_parameters():
        assert p.grad is not None, name


@pytest.mark.parametrize('single, lma, convert', [
    ('configs/erfnet/erfnet_fcn_4xb4-160k_cityscapes-512x1024.py',
     'configs/lma/lma-erfnet_4xb4-160k_cityscapes-seq-512x1024.py', True),
    ('configs/erfnet/erfnet-split_fcn_4xb4-160k_cityscapes-512x1024.py',
     'configs/lma/lma-erfnet_4xb4-160k_cityscapes-seq-512x1024.py', False),
    ('configs/demo/erfnet_demo.py', 'configs/demo/lma-erfnet_demo.py', False),
    ('configs/erfnet/erfnet-split_paper_2xb5-50e_cityscapes-seq-1024x512.py',
     'configs/lma/lma-erfnet_paper_2xb5-50e_cityscapes-seq-1024x512.py',
     False),
    ('configs/pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py',
     'configs/lma/lma-pspnet_r50-d8_4xb2-80k_cityscapes-seq-512x1024.py',
     False),
    ('configs/segformer/segformer_mit-b1_8xb2-160k_vspw-480x480.py',
     'configs/lma/lma-segformer_mit-b1_8xb2-160k_vspw-480x480.py', False),
    ('configs/deeplabv3plus/deeplabv3plus_r50-d8_4xb4-80k_vspw-480x480.py',
     'configs/lma/lma-deeplabv3plus_r50-d8_4xb4-80k_vspw-480x480.py', False),
])
def test_single_frame_checkpoint_loads_into_lma(single, lma, convert,
                                                tmp_path):
    from mmengine.runner import load_checkpoint
    state_dict = _build(single, seed=0).state_dict()
    if convert:
        state_dict = convert_state_dict(state_dict)
    path = tmp_path / 'single.pth'
    torch.save(dict(state_dict=state_dict), path)
    # another seed: before loading, the randomly initialised weights differ
    model = _build(lma, seed=1)
    missing = set(model.state_dict()) - set(state_dict)
    unexpected = set(state_dict) - set(model.state_dict())
    assert not unexpected
    assert missing and all(k.startswith('neck.') for k in missing)
    kernels = [k for k, v in state_dict.items() if v.ndim == 4]
    assert kernels
    differ = [
        k for k in kernels
        if not torch.equal(model.state_dict()[k], state_dict[k])
    ]
    assert len(differ) > 0.9 * len(kernels), \
        f'{len(kernels) - len(differ)} of {len(kernels)} kernels equal'
    load_checkpoint(model, str(path), map_location='cpu', strict=False)
    for key, value in state_dict.items():
        torch.testing.assert_close(model.state_dict()[key], value)
