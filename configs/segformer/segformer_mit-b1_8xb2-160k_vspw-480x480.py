# Baseline: single-frame SegFormer (MiT-B1) on the labelled frames of VSPW
# (mmseg's ADE20K recipe: AdamW lr 6e-5, 160k iterations, ImageNet MiT-B1),
# 124 classes. Its last checkpoint is the load_from of
# configs/lma/lma-segformer_mit-b1_8xb2-160k_vspw-480x480.py.
_base_ = [
    'mmseg::_base_/models/segformer_mit-b0.py', '../_base_/datasets/vspw.py',
    '../_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_160k.py'
]
crop_size = (480, 480)
data_preprocessor = dict(size=crop_size)
checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segformer/mit_b1_20220624-02e5a6a1.pth'  # noqa
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint),
        embed_dims=64,
        num_heads=[1, 2, 5, 8],
        num_layers=[2, 2, 2, 2]),
    decode_head=dict(in_channels=[64, 128, 320, 512], num_classes=124))
# Single frames: the key frames of the VSPW samples, without memory.
train_dataloader = dict(
    batch_size=2,
    dataset=dict(
        frame_offsets=(), pipeline={{_base_.frame_train_pipeline}}))
val_dataloader = dict(
    dataset=dict(frame_offsets=(), pipeline={{_base_.frame_test_pipeline}}))
test_dataloader = val_dataloader
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            'pos_block': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
            'head': dict(lr_mult=10.)
        }))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=1500,
        end=160000,
        by_epoch=False)
]
default_hooks = dict(
    checkpoint=dict(
        type='AtomicCheckpointHook', by_epoch=False, interval=16000))
