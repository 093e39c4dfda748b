# The Local Memory Attention authors' schedule (mattpfr/lmanet routines.py,
# README training command): Adam lr 2e-4, betas (0.9, 0.999), eps 1e-8,
# weight decay 1e-4 (--lr-start 2e-4); 50 epochs (--num-epochs 50),
# validation after every epoch; the learning rate x0.8 when the mean
# training loss of an epoch has not improved for 10 epochs
# (--lr-strategy plateau_08: torch's ReduceLROnPlateau('min', factor=0.8,
# min_lr=1e-9), stepped with the epoch's training loss); the best epoch on
# val mIoU is kept (model_best.pth).
optimizer = dict(
    type='Adam', lr=2e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4)
optim_wrapper = dict(type='OptimWrapper', optimizer=optimizer, clip_grad=None)
param_scheduler = [
    # mmengine steps ReduceOnPlateauLR after each validation with the val
    # metrics; TrainLossMetricHook (custom_hooks) adds the epoch's mean
    # training loss to them as 'train_loss', averaged over the ranks so
    # that every rank keeps the same learning rate (their code steps each
    # rank's scheduler with that rank's own mean loss, so on several GPUs
    # the ranks can reduce the rate in different epochs). torch's defaults
    # otherwise: patience 10, relative threshold 1e-4, no cooldown.
    dict(
        type='ReduceOnPlateauLR',
        monitor='train_loss',
        rule='less',
        factor=0.8,
        patience=10,
        threshold=1e-4,
        threshold_rule='rel',
        cooldown=0,
        min_value=1e-9,
        by_epoch=True)
]
custom_hooks = [dict(type='TrainLossMetricHook', key='train_loss')]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=50, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # The last epoch (checkpoint.pth.tar) and the best one on val mIoU at
    # the working resolution (model_best.pth).
    checkpoint=dict(
        type='AtomicCheckpointHook',
        by_epoch=True,
        interval=1,
        max_keep_ckpts=1,
        save_best='mIoU',
        rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
# Top-level configs set log_processor = dict(by_epoch=True) (the runtime
# base defines it already).
