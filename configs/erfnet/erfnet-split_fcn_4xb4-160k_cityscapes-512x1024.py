# Baseline: the single-frame ERFNet split into ERFNetEncoder (backbone) and
# ERFNetDecoderHead (decode head). Same layers, data and schedule as mmseg's
# erfnet_fcn_4xb4-160k_cityscapes-512x1024; its checkpoint (or mmseg's,
# converted with tools/convert/mmseg_erfnet_to_split.py) is the load_from of
# configs/lma/lma-erfnet_4xb4-160k_cityscapes-seq-512x1024.py.
_base_ = [
    '../_base_/models/erfnet-split.py', 'mmseg::_base_/datasets/cityscapes.py',
    '../_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_160k.py',
    '../_base_/datasets/cityscapes_checked-labels.py'
]
crop_size = (512, 1024)
data_preprocessor = dict(size=crop_size)
model = dict(data_preprocessor=data_preprocessor)
# labels through the loader that checks the class range
train_dataloader = dict(
    batch_size=4,
    num_workers=4,
    dataset=dict(pipeline={{_base_.checked_train_pipeline}}))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    dataset=dict(pipeline={{_base_.checked_test_pipeline}}))
test_dataloader = val_dataloader
tta_pipeline = {{_base_.checked_tta_pipeline}}
