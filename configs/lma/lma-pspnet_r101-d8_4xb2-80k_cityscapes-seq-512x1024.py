# LMA-PSPNet with ResNet-101-D8: as the ResNet-50 variant, starting from
# mmseg's single-frame PSPNet of
# configs/pspnet/pspnet_r101-d8_4xb2-80k_cityscapes-512x1024.py.
_base_ = './lma-pspnet_r50-d8_4xb2-80k_cityscapes-seq-512x1024.py'
model = dict(backbone=dict(depth=101))
load_from = 'https://download.openmmlab.com/mmsegmentation/v0.5/pspnet/pspnet_r101-d8_512x1024_80k_cityscapes/pspnet_r101-d8_512x1024_80k_cityscapes_20200606_112211-e1e1100f.pth'  # noqa
