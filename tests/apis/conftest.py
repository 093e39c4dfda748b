"""Tiny LMA and single-frame segmentors for the API tests."""
import copy

import pytest
import torch
from mmengine import Config
from mmengine.registry import init_default_scope

import lma_mmseg  # noqa: F401  (registers the components)

NUM_CLASSES = 5
MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]


def tiny_backbone() -> dict:
    """ResNetV1c-18 with 8 base channels, output stride 8, 64 channels."""
    return dict(
        type='ResNetV1c',
        depth=18,
        base_channels=8,
        stem_channels=8,
        out_indices=(2, 3),
        strides=(1, 2, 1, 1),
        dilations=(1, 1, 2, 4),
        contract_dilation=True,
        norm_cfg=dict(type='BN'))


def tiny_head() -> dict:
    return dict(
        type='FCNHead',
        in_channels=64,
        channels=16,
        in_index=1,
        num_convs=1,
        num_classes=NUM_CLASSES,
        dropout_ratio=0.1,
        loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0))


def preprocessor() -> dict:
    return dict(
        type='SegDataPreProcessor',
        mean=MEAN,
        std=STD,
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255)


def lma_model_cfg(memory_length: int = 3, test_cfg=None) -> dict:
    """A tiny VideoEncoderDecoder config."""
    return dict(
        type='VideoEncoderDecoder',
        data_preprocessor=preprocessor(),
        backbone=tiny_backbone(),
        neck=dict(
            type='LocalMemoryNeck',
            in_channels=64,
            key_channels=8,
            value_channels=16,
            window=5,
            memory_length=memory_length,
            in_index=1,
            fusion=dict(type='GatedFusion')),
        decode_head=tiny_head(),
        test_cfg=test_cfg or dict(mode='whole'))


def single_model_cfg(test_cfg=None) -> dict:
    """The same backbone and head as a plain mmseg EncoderDecoder."""
    return dict(
        type='EncoderDecoder',
        data_preprocessor=preprocessor(),
        backbone=tiny_backbone(),
        decode_head=tiny_head(),
        test_cfg=test_cfg or dict(mode='whole'))


def make_config(model: dict, test_pipeline=None) -> Config:
    return Config(
        dict(
            model=copy.deepcopy(model),
            default_scope='mmseg',
            test_pipeline=test_pipeline or [
                dict(type='LoadImageFromFile'),
                dict(type='PackSegInputs')
            ]))


def randomise_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BN layer non-trivial running statistics and affine
    parameters so that eval-mode outputs depend on them."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            num = module.num_features
            module.running_mean.copy_(torch.randn(num, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(num, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(num, generator=gen) + 0.5)
            module.bias.data.copy_(torch.randn(num, generator=gen) * 0.1)


@pytest.fixture(autouse=True)
def mmseg_scope():
    """Build with mmseg's registries, as configs with
    ``default_scope='mmseg'`` do."""
    init_default_scope('mmseg')


@pytest.fixture
def lma_config():
    return make_config(lma_model_cfg())


@pytest.fixture
def single_config():
    return make_config(single_model_cfg())
