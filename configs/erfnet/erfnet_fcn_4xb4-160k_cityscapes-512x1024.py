# Baseline: mmseg's single-frame ERFNet (encoder and decoder in one
# backbone, FCN head), unchanged. Cityscapes key frames (leftImg8bit are the
# annotated frames of leftImg8bit_sequence), 160k iterations.
_base_ = [
    'mmseg::erfnet/erfnet_fcn_4xb4-160k_cityscapes-512x1024.py',
    '../_base_/custom_imports.py'
]
