# Baseline: mmseg's single-frame ERFNet (encoder and decoder in one
# backbone, FCN head), unchanged but for the label loader (below).
# Cityscapes key frames (leftImg8bit are the annotated frames of
# leftImg8bit_sequence), 160k iterations.
_base_ = [
    'mmseg::erfnet/erfnet_fcn_4xb4-160k_cityscapes-512x1024.py',
    '../_base_/custom_imports.py',
    '../_base_/datasets/cityscapes_checked-labels.py'
]
# Labels through the loader that checks the class range.
train_dataloader = dict(
    dataset=dict(pipeline={{_base_.checked_train_pipeline}}))
val_dataloader = dict(dataset=dict(pipeline={{_base_.checked_test_pipeline}}))
test_dataloader = val_dataloader
tta_pipeline = {{_base_.checked_tta_pipeline}}
