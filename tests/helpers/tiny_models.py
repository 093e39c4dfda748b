"""The tiny segmentors of the test suite: one single-frame model and its LMA
version (same backbone and head), and a few random samples to train them.

The backbone is ResNetV1c-18 with 8 base channels and output stride 8 (64
channels); the head an FCN head; the LMA model puts a ``LocalMemoryNeck``
between them.
"""
import copy

import numpy as np
import torch
from mmengine import Config
from mmengine.dataset import Compose
from mmengine.structures import PixelData
from mmseg.registry import DATASETS, TRANSFORMS
from mmseg.structures import SegDataSample

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


def clip_augmentation(crop_size=(32, 32)) -> dict:
    """Crop and flip with one numpy draw per clip."""
    return dict(
        type='ClipTransformBroadcaster',
        transforms=[
            dict(type='RandomCrop', crop_size=crop_size),
            dict(type='RandomFlip', prob=0.5),
        ])


def preprocessor(video: bool = False, size=None) -> dict:
    cfg = dict(
        type='VideoSegDataPreProcessor' if video else 'SegDataPreProcessor',
        mean=MEAN,
        std=STD,
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255)
    if size is not None:
        cfg['size'] = tuple(size)
    return cfg


def tiny_neck(**kwargs) -> dict:
    """A LocalMemoryNeck on the tiny backbone's 64-channel output (key 8,
    value 16, 5x5 window); ``kwargs`` override."""
    return dict(
        dict(
            type='LocalMemoryNeck',
            in_channels=64,
            key_channels=8,
            value_channels=16,
            window=5,
            in_index=1), **kwargs)


def lma_model_cfg(memory_length: int = 3, test_cfg=None,
                  video_preprocessor: bool = False) -> dict:
    """A tiny VideoEncoderDecoder config."""
    return dict(
        type='VideoEncoderDecoder',
        data_preprocessor=preprocessor(video=video_preprocessor),
        backbone=tiny_backbone(),
        neck=tiny_neck(
            memory_length=memory_length, fusion=dict(type='GatedFusion')),
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
    """An inference config (``init_model``) around a model config."""
    return Config(
        dict(
            model=copy.deepcopy(model),
            default_scope='mmseg',
            test_pipeline=test_pipeline or [
                dict(type='LoadImageFromFile'),
                dict(type='PackSegInputs')
            ]))


def randomise_bn(model: torch.nn.Module, seed: int = 0,
                 scale: float = 0.1) -> None:
    """Give every BN layer non-trivial running statistics and affine
    parameters so that eval-mode outputs depend on them (means and biases
    of standard deviation ``scale``)."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            num = module.num_features
            module.running_mean.copy_(torch.randn(num, generator=gen) * scale)
            module.running_var.copy_(torch.rand(num, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(num, generator=gen) + 0.5)
            module.bias.data.copy_(torch.randn(num, generator=gen) * scale)


@DATASETS.register_module(force=True)
class TinySegDataset(torch.utils.data.Dataset):
    """``num`` random 32x32 images with random labels (3 of the
    ``NUM_CLASSES`` classes), packed as mmseg's ``PackSegInputs`` does."""

    metainfo = dict(classes=tuple('abcde'), palette=[[0, 0, 0]] * 5)

    def __init__(self, num=16):
        gen = torch.Generator().manual_seed(0)
        self.items = []
        for _ in range(num):
            img = torch.randint(0, 256, (3, 32, 32), generator=gen)
            label = torch.randint(0, 3, (1, 32, 32), generator=gen)
            sample = SegDataSample(
                metainfo=dict(img_shape=(32, 32), ori_shape=(32, 32)))
            sample.gt_sem_seg = PixelData(data=label)
            self.items.append(
                dict(inputs=img.to(torch.uint8), data_samples=sample))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        return self.items[idx]


@DATASETS.register_module(force=True)
class TinyClipDataset(torch.utils.data.Dataset):
    """``num`` random clips of ``clip_len`` 40x40 frames (key frame last)
    with a random key-frame label, through a clip pipeline.

    The default pipeline crops 32x32 and flips with numpy-drawn parameters
    shared by the frames of a clip (``ClipTransformBroadcaster``), then packs
    the clip (``PackClipSegInputs``), so training draws from numpy's random
    state as the video datasets do.
    """

    metainfo = TinySegDataset.metainfo

    def __init__(self, num=8, clip_len=3, pipeline=None):
        rng = np.random.default_rng(0)
        self.items = []
        for i in range(num):
            imgs = [
                rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
                for _ in range(clip_len)
            ]
            label = rng.integers(0, 3, (40, 40), dtype=np.uint8)
            self.items.append((f'tiny_clip_{i}', imgs, label))
        pipeline = pipeline or [
            clip_augmentation(), dict(type='PackClipSegInputs')
        ]
        self.pipeline = Compose([TRANSFORMS.build(t) for t in pipeline])

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        name, imgs, label = self.items[idx]
        imgs = [img.copy() for img in imgs]
        results = dict(
            img_path=name,
            seg_map_path=name,
            imgs=imgs,
            img=imgs[-1],
            img_shape=imgs[-1].shape[:2],
            ori_shape=imgs[-1].shape[:2],
            gt_seg_map=label.copy(),
            seg_fields=['gt_seg_map'],
            reduce_zero_label=False)
        return self.pipeline(results)
