# Single-frame ERFNet (the split ERFNetEncoder + ERFNetDecoderHead, plain
# EncoderDecoder) on the synthetic demo data (tools/make_demo_data.py
# --out data/demo): trained from scratch on the key frames of the same
# samples as configs/demo/lma-erfnet_demo.py, which starts from its last
# checkpoint. A demo-sized ERFNet (the same block types, fewer
# non-bottleneck blocks and smaller dilations for the 16x32 map at 1/8),
# trained on whole 128x256 frames, so it trains on a 2-core CPU in minutes:
#   python tools/train.py configs/demo/erfnet_demo.py
_base_ = [
    '../_base_/models/erfnet-split.py', '../_base_/datasets/demo-seq.py',
    '../_base_/default_runtime.py'
]

# ---- knobs -------------------------------------------------------------
# 800 iterations: near the val plateau on the demo data (500 iterations
# plus 300 more at lr 1e-3 end at 37.5 mIoU, 800 at once at 40.6).
# lma-erfnet_demo.py loads work_dirs/erfnet_demo/iter_{max_iters}.pth
max_iters = 800
val_interval = 400
lr = 3e-3
batch_size = 4
train_crop = (128, 256)  # (h, w): whole frames
# ------------------------------------------------------------------------

norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(size=train_crop)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        enc_stage_non_bottlenecks=(1, 2),
        enc_non_bottleneck_dilations=(2, 4)),
    decode_head=dict(dec_stages_non_bottleneck=(1, 1), norm_cfg=norm_cfg))

# Key frames only, with mmseg's single-frame loading and augmentation
# (random flip of whole frames); validation on whole frames.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadCheckedAnnotations'),
    dict(type='RandomCrop', crop_size=train_crop, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=batch_size, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline={{_base_.frame_test_pipeline}}))
test_dataloader = val_dataloader

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='Adam', lr=lr, betas=(0.9, 0.999), weight_decay=1e-4))
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=0.9,
        begin=0,
        end=max_iters,
        by_epoch=False)
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='AtomicCheckpointHook', by_epoch=False, interval=max_iters),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
randomness = dict(seed=0)
