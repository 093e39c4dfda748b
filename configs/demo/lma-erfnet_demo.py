# LMA-ERFNet on the synthetic demo data (tools/make_demo_data.py --out
# data/demo): the demo-sized ERFNet of configs/demo/erfnet_demo.py with the
# Local Memory Attention neck between encoder and decoder (key 16, value 64,
# T=3 memory frames, GatedFusion). As in the paper it starts from the
# trained single-frame model. The recipe (residual start, window 3, learned
# position prior at lr x100) is the one with the best worst-case gain over
# its single-frame twin across the degradation modes of the temporal
# benchmark suite (tools/analysis/temporal_suite.py; README, "Temporal
# benchmark suite"), not one tuned to the demo's own glare/fog data:
#   python tools/train.py configs/demo/erfnet_demo.py
#   python tools/train.py configs/demo/lma-erfnet_demo.py
# (another single-frame checkpoint: --cfg-options load_from=PATH).
_base_ = [
    '../_base_/models/lma-erfnet.py', '../_base_/datasets/demo-seq.py',
    '../_base_/default_runtime.py'
]
custom_imports = dict(imports=['lma_mmseg'], allow_failed_imports=False)
default_scope = 'mmseg'

# ---- knobs -------------------------------------------------------------
max_iters = 300
val_interval = 150
lr = 1e-3
batch_size = 4
train_crop = (128, 256)  # (h, w): whole frames, as erfnet_demo.py
# The attention window at 1/8 scale. The paper's 21 at 1/8 of 1024x2048
# Cityscapes frames spans 8 % of the 256-cell wide map; the demo map is 32
# cells wide. Window 21 (most of the map) learns no useful read-out in 300
# iterations (val mIoU below the single-frame model); in the temporal suite
# window 3 beats window 7 on every degradation mode (a local read-out, with
# the position prior learning where in the window to look).
window = 3
# The last checkpoint of configs/demo/erfnet_demo.py (its max_iters).
load_from = 'work_dirs/erfnet_demo/iter_800.pth'
# ------------------------------------------------------------------------

norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(size=train_crop)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        enc_stage_non_bottlenecks=(1, 2),
        enc_non_bottleneck_dilations=(2, 4)),
    neck=dict(
        key_channels=16,
        value_channels=64,
        window=window,
        memory_length=3,
        # identity at init: feat + alpha * fusion(...), alpha = 0, so the
        # fine-tuning starts from the single-frame model's output
        residual=True,
        # a learned (T, window * window) logit prior before the softmax
        position_bias=True,
        fusion=dict(type='GatedFusion', dropout_ratio=0.3,
                    norm_cfg=norm_cfg)),
    decode_head=dict(dec_stages_non_bottleneck=(1, 1), norm_cfg=norm_cfg),
    # The paper trains only the memory heads and the fusion
    # (freeze=('backbone', 'decode_head')) on a converged single-frame
    # model. The demo's short single-frame run is not converged, and the
    # decoder has to learn to use the read-out of hidden regions: it trains
    # with the memory. Measured on the demo data (300 iterations from a
    # 500-iteration single-frame model): val mIoU 60.8 with the encoder
    # frozen, 59.5 with freeze=None (twice the iteration time).
    freeze=('backbone', ))

# The same random flip for every frame of a clip (whole frames, as
# erfnet_demo.py); validation on whole frames.
train_pipeline = [
    dict(type='LoadClipFromFiles'),
    dict(
        type='ClipTransformBroadcaster',
        transforms=[
            dict(type='RandomCrop', crop_size=train_crop, cat_max_ratio=0.75),
            dict(type='RandomFlip', prob=0.5),
        ]),
    dict(type='PackClipSegInputs'),
]
train_dataloader = dict(
    batch_size=batch_size, dataset=dict(pipeline=train_pipeline))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='Adam', lr=lr, betas=(0.9, 0.999), weight_decay=1e-4),
    # at the neck's learning rate the prior barely moves in 300 iterations
    paramwise_cfg=dict(custom_keys={'neck.position_bias': dict(lr_mult=100)}))
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
