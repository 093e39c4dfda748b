# Baseline: single-frame DeepLabV3+ (ResNet-50-D8) on the labelled frames of
# VSPW (mmseg's ADE20K recipe: SGD lr 0.01, 80k iterations, 4 GPUs x 4
# frames), 124 classes. Its last checkpoint is the load_from of
# configs/lma/lma-deeplabv3plus_r50-d8_4xb4-80k_vspw-480x480.py.
_base_ = [
    'mmseg::_base_/models/deeplabv3plus_r50-d8.py',
    '../_base_/datasets/vspw.py', '../_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py'
]
crop_size = (480, 480)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(num_classes=124),
    auxiliary_head=dict(num_classes=124))
# Single frames: the key frames of the VSPW samples, without memory.
train_dataloader = dict(
    batch_size=4,
    dataset=dict(
        frame_offsets=(), pipeline={{_base_.frame_train_pipeline}}))
val_dataloader = dict(
    dataset=dict(frame_offsets=(), pipeline={{_base_.frame_test_pipeline}}))
test_dataloader = val_dataloader
default_hooks = dict(
    checkpoint=dict(
        type='AtomicCheckpointHook', by_epoch=False, interval=8000))
