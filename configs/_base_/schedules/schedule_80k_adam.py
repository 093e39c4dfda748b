# The Local Memory Attention schedule (Adam, lr 2e-4, weight decay 1e-4,
# poly decay) over 80k iterations, the length of mmseg's PSPNet and
# DeepLabV3+ Cityscapes schedules.
_base_ = ['./schedule_160k_adam.py']
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=0.9,
        begin=0,
        end=80000,
        by_epoch=False)
]
train_cfg = dict(max_iters=80000, val_interval=8000)
default_hooks = dict(checkpoint=dict(interval=8000))
