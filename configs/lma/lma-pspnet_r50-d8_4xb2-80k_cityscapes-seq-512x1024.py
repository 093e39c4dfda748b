# LMA-PSPNet (ResNet-50-D8) on Cityscapes video (Paul et al., 2021): key
# 128, value = raw layer4 feature (2048 channels), window 21 at 1/8, T=3,
# GatedDownFusion (256-channel bottleneck), auxiliary FCN head on layer3 of
# the key frame. Starts from mmseg's single-frame PSPNet of
# configs/pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py (same keys,
# the neck is new) and trains the memory heads and the fusion (Adam, lr 2e-4,
# weight decay 1e-4, 80k iterations as the baseline).
_base_ = [
    '../_base_/models/lma-pspnet_r50-d8.py',
    '../_base_/datasets/cityscapes-seq.py', '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_80k_adam.py'
]
crop_size = (512, 1024)
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    # Every weight but the neck's comes from load_from.
    pretrained=None,
    neck=dict(fusion=dict(norm_cfg=norm_cfg)))
train_dataloader = dict(batch_size=2, num_workers=2)
val_dataloader = dict(batch_size=1, num_workers=4)
test_dataloader = val_dataloader
load_from = 'https://download.openmmlab.com/mmsegmentation/v0.5/pspnet/pspnet_r50-d8_512x1024_80k_cityscapes/pspnet_r50-d8_512x1024_80k_cityscapes_20200606_112131-2376f12b.pth'  # noqa
