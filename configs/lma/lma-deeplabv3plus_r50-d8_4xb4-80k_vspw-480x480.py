# Local Memory Attention added to DeepLabV3+ (ResNet-50-D8) on VSPW, by
# config only. The neck reads layer4 (in_index=3: 2048 channels at 1/8) of
# the key frame and of the memory frames at CFFM's offsets (-9, -6, -3) and
# replaces it by the fused map before the ASPP head (key 128, raw value,
# window 21, GatedDownFusion as LMA-PSPNet); layer1 and layer3 pass through
# unchanged. Starts from the single-frame DeepLabV3+ trained on VSPW
# (configs/deeplabv3plus/deeplabv3plus_r50-d8_4xb4-80k_vspw-480x480.py) and
# trains the memory heads and the fusion (Adam, lr 2e-4, weight decay 1e-4).
_base_ = [
    'mmseg::_base_/models/deeplabv3plus_r50-d8.py',
    '../_base_/datasets/vspw.py', '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_80k_adam.py'
]
crop_size = (480, 480)
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(type='VideoSegDataPreProcessor', size=crop_size)
# The memory frames, stated once: the model reads them in streaming (and
# keeps max(|offset|) = 9 frames' keys and values), the clips of every split
# hold them (the neck's memory_length follows: 3 frames read).
memory_offsets = (-9, -6, -3)
model = dict(
    type='VideoEncoderDecoder',
    data_preprocessor=data_preprocessor,
    memory_offsets=memory_offsets,
    pretrained=None,
    decode_head=dict(num_classes=124),
    auxiliary_head=dict(num_classes=124),
    neck=dict(
        type='LocalMemoryNeck',
        in_channels=2048,
        key_channels=128,
        value_channels=None,
        window=21,
        in_index=3,
        fusion=dict(type='GatedDownFusion', channels=256, norm_cfg=norm_cfg)),
    freeze_memory_encoder=True,
    freeze=('backbone', 'decode_head', 'auxiliary_head'))
train_dataloader = dict(
    batch_size=4,
    num_workers=4,
    dataset=dict(frame_offsets=memory_offsets))
val_dataloader = dict(
    batch_size=1, num_workers=4, dataset=dict(frame_offsets=memory_offsets))
test_dataloader = val_dataloader
load_from = 'work_dirs/deeplabv3plus_r50-d8_4xb4-80k_vspw-480x480/iter_80000.pth'  # noqa
