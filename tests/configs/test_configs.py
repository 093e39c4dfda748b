"""Every config of the repository loads, builds and trains one step on CPU.

For each LMA config: the model builds, one training iteration on a tiny
synthetic clip (through the config's own data preprocessor) gives a finite
loss and gradients exactly where they should be (the frozen parts get none),
and a lone image (no memory) is segmented. Single-frame baselines build and
train one step as well. Checkpoints of the single-frame models load into the
LMA models with only the neck's keys missing.

Every config inherits ``custom_imports`` and ``default_scope`` (stated once),
names its crop height x width as its data do, and configs/lma/metafile.yaml
lists the LMA configs with metadata that matches them.
"""
import ast
import copy
import functools
import glob
import os.path as osp
import re

import pytest
import torch
import yaml
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

# every config under configs/ but the _base_ files
ALL_CONFIGS = sorted(
    osp.relpath(p, ROOT)
    for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in osp.relpath(p, ROOT).split(osp.sep))
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
    'configs/lma/lma-erfnet_paper_2xb5-50e_cityscapes-seq-512x1024.py',
    'configs/lma/lma-pspnet_r101-d8_paper_6xb1-50e_'
    'cityscapes-seq-1025x2049.py',
]
FRAME_CONFIGS = [
    'configs/erfnet/erfnet_fcn_4xb4-160k_cityscapes-512x1024.py',
    'configs/erfnet/erfnet-split_fcn_4xb4-160k_cityscapes-512x1024.py',
    'configs/pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py',
    'configs/pspnet/pspnet_r101-d8_4xb2-80k_cityscapes-512x1024.py',
    'configs/demo/erfnet_demo.py',
    'configs/segformer/segformer_mit-b1_8xb2-160k_vspw-480x480.py',
    'configs/deeplabv3plus/deeplabv3plus_r50-d8_4xb4-80k_vspw-480x480.py',
    'configs/erfnet/erfnet-split_paper_2xb5-50e_cityscapes-seq-512x1024.py',
]
NUM_CLASSES = 19
H, W = 64, 64


@functools.lru_cache(maxsize=None)
def _load(rel):
    return Config.fromfile(osp.join(ROOT, rel))


def _cfg(rel):
    """The config at ``rel`` (relative to the repository), a copy that the
    caller may change."""
    return copy.deepcopy(_load(rel))


# The ResNet-based models are built at a quarter of their width: these
# tests check wiring (which parts train, what loads, what a lone image
# gives), not capacity, and the full ResNet-50/101 models took half of this
# file's time. Depth, strides, dilations, heads and neck keep the config's
# structure.
WIDTH_DIVISOR = 4
CHANNEL_KEYS = ('in_channels', 'channels', 'c1_in_channels', 'c1_channels',
                'key_channels', 'value_channels', 'gate_channels')


def _divide_channels(cfg):
    """Divide the channel widths of a head or neck config (and of the
    configs nested in it, e.g. the neck's fusion) by WIDTH_DIVISOR."""
    for key, value in cfg.items():
        if key in CHANNEL_KEYS and isinstance(value, int):
            cfg[key] = value // WIDTH_DIVISOR
        elif isinstance(value, dict):
            _divide_channels(value)


def _thin(model_cfg):
    """A ResNet-based model config at 1/WIDTH_DIVISOR of its width; other
    backbones are left as they are."""
    if model_cfg.backbone.type not in ('ResNetV1c', 'ResNet'):
        return
    model_cfg.backbone.stem_channels = 64 // WIDTH_DIVISOR
    model_cfg.backbone.base_channels = 64 // WIDTH_DIVISOR
    for part in ('neck', 'decode_head', 'auxiliary_head', 'memory_head'):
        cfgs = model_cfg.get(part)
        for cfg in cfgs if isinstance(cfgs, list) else [cfgs]:
            if cfg:
                _divide_channels(cfg)


def _build(rel, seed=0, **model_overrides):
    """Build the model of a config on CPU (SyncBN -> BN, no downloads, the
    ResNet-based ones thinner: :func:`_thin`), its random weights drawn
    from ``seed``."""
    model_cfg = _cfg(rel).model
    model_cfg.pretrained = None
    model_cfg.backbone.pop('init_cfg', None)
    _thin(model_cfg)
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


def _assignments(path):
    """Names assigned at the top level of the config file ``path``."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    return {
        target.id
        for node in tree.body if isinstance(node, ast.Assign)
        for target in node.targets if isinstance(target, ast.Name)
    }


def test_custom_imports_and_default_scope_are_stated_once():
    """custom_imports lives in configs/_base_/custom_imports.py only and
    default_scope in configs/_base_/default_runtime.py only (which inherits
    the former); configs based on an mmseg:: config take default_scope from
    mmseg's runtime. mmengine refuses a key that two bases of one config
    define, so no other base may state them. test_config_parses_with_plugin_
    import checks that every config inherits both; Config.fromfile imports
    the modules of the merged config, and configs/test_demo_train.py runs
    configs that inherit them through mmseg's own tools/train.py."""
    stating = dict(custom_imports=set(), default_scope=set())
    for path in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'),
                          recursive=True):
        names = _assignments(path)
        for key, files in stating.items():
            if key in names:
                files.add(osp.relpath(path, ROOT))
    assert stating == dict(
        custom_imports={'configs/_base_/custom_imports.py'},
        default_scope={'configs/_base_/default_runtime.py'})


NAME_CROP = re.compile(r'-(\d+)x(\d+)\.py$')


def _transforms(pipeline):
    """The transforms of a pipeline, those inside ClipTransformBroadcaster
    included."""
    for t in pipeline:
        yield t
        yield from _transforms(t.get('transforms', []))


def _stated_sizes(cfg):
    """The (h, w) input sizes a config states for training: ``crop_size``,
    the data preprocessor's ``size``, RandomCrop's ``crop_size`` and the
    ``scale`` (w, h) of a Resize to a fixed size, reversed."""
    sizes = {}
    if 'crop_size' in cfg:
        sizes['crop_size'] = tuple(cfg.crop_size)
    if cfg.model.data_preprocessor.get('size'):
        sizes['data_preprocessor.size'] = tuple(
            cfg.model.data_preprocessor.size)
    for t in _transforms(cfg.train_dataloader.dataset.pipeline):
        if t.type == 'RandomCrop':
            sizes['RandomCrop.crop_size'] = tuple(t.crop_size)
        elif t.type == 'Resize' and not t.get('keep_ratio', False):
            sizes['Resize.scale (w, h) reversed'] = tuple(t.scale[::-1])
    return sizes


@pytest.mark.parametrize('rel', ALL_CONFIGS)
def test_config_name_crop_is_height_x_width(rel):
    """mmseg's names give the crop as HxW (512x1024: 512 high, 1024 wide);
    every size the config states for its training input is that one."""
    match = NAME_CROP.search(rel)
    if rel.startswith('configs/demo/'):
        assert match is None, f'{rel}: demo configs are named without a crop'
        return
    assert match, f'{rel}: no -HxW crop at the end of the name'
    name_hw = tuple(map(int, match.groups()))
    sizes = _stated_sizes(_cfg(rel))
    assert sizes, f'{rel} states no crop or input size'
    for key, size in sizes.items():
        assert size == name_hw, \
            f'{rel}: {key} is {size} (h, w), the name says {name_hw}'


METAFILE = osp.join(ROOT, 'configs', 'lma', 'metafile.yaml')
LMA_README = osp.join(ROOT, 'configs', 'lma', 'README.md')


def _metafile():
    with open(METAFILE) as f:
        return yaml.safe_load(f)


def test_metafile_lists_every_lma_config():
    meta = _metafile()
    collections = {c['Name'] for c in meta['Collections']}
    for collection in meta['Collections']:
        assert osp.isfile(osp.join(ROOT, collection['README']))
    configs = [model['Config'] for model in meta['Models']]
    assert len(set(configs)) == len(configs), 'a config is listed twice'
    for model in meta['Models']:
        assert osp.isfile(osp.join(ROOT, model['Config'])), model['Config']
        assert model['Name'] == osp.splitext(osp.basename(
            model['Config']))[0]
        assert model['In Collection'] in collections
    lma = {rel for rel in ALL_CONFIGS if osp.basename(rel).startswith('lma-')}
    assert set(configs) == lma
    with open(LMA_README) as f:
        readme = f.read()
    for rel in configs:
        assert osp.basename(rel) in readme, f'{rel} not in {LMA_README}'


@pytest.mark.parametrize(
    'model', _metafile()['Models'], ids=lambda model: model['Name'])
def test_metafile_metadata_matches_the_config(model):
    cfg = _cfg(model['Config'])
    meta = model['Metadata']
    crop = re.fullmatch(r'\((\d+),(\d+)\)', meta['crop size'])
    assert crop, meta['crop size']
    assert set(_stated_sizes(cfg).values()) == {
        tuple(map(int, crop.groups()))
    }
    if isinstance(meta['lr schd'], int):
        assert cfg.train_cfg.type == 'IterBasedTrainLoop'
        assert cfg.train_cfg.max_iters == meta['lr schd']
    else:
        assert cfg.train_cfg.type == 'EpochBasedTrainLoop'
        assert meta['lr schd'] == f'{cfg.train_cfg.max_epochs} epochs'
    # Batch Size: all GPUs together, {gpus}xb{per GPU} in the name
    per_gpu = cfg.train_dataloader.batch_size
    gpus = re.search(r'_(\d+)xb(\d+)-', model['Name'])
    if gpus:
        assert int(gpus.group(2)) == per_gpu
        assert meta['Batch Size'] == int(gpus.group(1)) * per_gpu
    else:
        assert meta['Batch Size'] == per_gpu
    # results stated in the metafile are the README's measured ones
    if 'Results' in model:
        with open(LMA_README) as f:
            rows = [
                line for line in f
                if f'({osp.relpath(model["Config"], "configs/lma")})' in line
            ]
        assert len(rows) == 1, rows
        assert f'| {model["Results"]["Metrics"]["mIoU"]:.2f} |' in rows[0]


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
    # VSPW: CFFM's strided offsets; the demo recipe: frames 6, 4, 2 back
    if 'vspw' in rel:
        expected = (-9, -6, -3)
    elif rel == 'configs/demo/lma-erfnet_demo.py':
        expected = (-6, -4, -2)
    else:
        expected = (-3, -2, -1)
    assert tuple(offsets) == expected
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
        # and a head on the memory read-out adds its loss
        assert 'mem.loss_ce' in losses
    else:
        assert frozen == ('backbone', )
    if rel != 'configs/demo/lma-erfnet_demo.py':
        assert model.memory_head is None and not any(
            k.startswith('mem.') for k in losses)
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
    ('configs/erfnet/erfnet-split_paper_2xb5-50e_cityscapes-seq-512x1024.py',
     'configs/lma/lma-erfnet_paper_2xb5-50e_cityscapes-seq-512x1024.py',
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
    # the neck's, the memory's own BN statistics where the model keeps
    # them (filled in from the checkpoint's backbone when it loads) and
    # the head on the memory read-out where the model has one
    assert missing and all(
        k.startswith(('neck.', 'memory_norm.', 'memory_head.'))
        for k in missing)
    assert any(k.startswith('memory_head.') for k in missing) == (
        model.memory_head is not None)
    assert any(k.startswith('neck.') for k in missing)
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
    if getattr(model, 'memory_norm_stats', 'shared') == 'start':
        assert model.memory_norm.ready
        for key, value in model.memory_norm.stats().items():
            torch.testing.assert_close(value, state_dict[f'backbone.{key}'])
