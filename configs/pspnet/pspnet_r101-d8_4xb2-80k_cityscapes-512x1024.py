# Baseline: mmseg's single-frame PSPNet (ResNet-101-D8), unchanged but for
# the label loader (below), whose checkpoint is the load_from of
# configs/lma/lma-pspnet_r101-d8_4xb2-80k_cityscapes-seq-512x1024.py.
_base_ = [
    'mmseg::pspnet/pspnet_r101-d8_4xb2-80k_cityscapes-512x1024.py',
    '../_base_/custom_imports.py',
    '../_base_/datasets/cityscapes_checked-labels.py'
]
# Labels through the loader that checks the class range.
train_dataloader = dict(
    dataset=dict(pipeline={{_base_.checked_train_pipeline}}))
val_dataloader = dict(dataset=dict(pipeline={{_base_.checked_test_pipeline}}))
test_dataloader = val_dataloader
tta_pipeline = {{_base_.checked_tta_pipeline}}
