# Baseline: mmseg's single-frame PSPNet (ResNet-101-D8), unchanged, whose
# checkpoint is the load_from of
# configs/lma/lma-pspnet_r101-d8_4xb2-80k_cityscapes-seq-512x1024.py.
_base_ = [
    'mmseg::pspnet/pspnet_r101-d8_4xb2-80k_cityscapes-512x1024.py',
    '../_base_/custom_imports.py'
]
