# Local Memory Attention added to mmseg's DeepLabV3+ (ResNet-50-D8) by
# config only. The neck reads layer4 (in_index=3: 2048 channels at 1/8, as
# in PSPNet) and replaces it by the fused map before the ASPP head; layer1
# (the head's low-level c1 input) and layer3 (the auxiliary head's input)
# pass through unchanged. Starts from mmseg's single-frame DeepLabV3+ and
# trains the memory heads and the fusion.
_base_ = [
    'mmseg::_base_/models/deeplabv3plus_r50-d8.py',
    '../_base_/datasets/cityscapes-seq.py', '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_80k_adam.py'
]
crop_size = (512, 1024)
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(type='VideoSegDataPreProcessor', size=crop_size)
model = dict(
    type='VideoEncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    neck=dict(
        type='LocalMemoryNeck',
        in_channels=2048,
        key_channels=128,
        value_channels=None,
        window=21,
        memory_length=3,
        in_index=3,
        fusion=dict(type='GatedDownFusion', channels=256, norm_cfg=norm_cfg)),
    freeze_memory_encoder=True,
    freeze=('backbone', 'decode_head', 'auxiliary_head'))
train_dataloader = dict(batch_size=2, num_workers=2)
val_dataloader = dict(batch_size=1, num_workers=4)
test_dataloader = val_dataloader
load_from = 'https://download.openmmlab.com/mmsegmentation/v0.5/deeplabv3plus/deeplabv3plus_r50-d8_512x1024_80k_cityscapes/deeplabv3plus_r50-d8_512x1024_80k_cityscapes_20200606_114049-f9fb496d.pth'  # noqa
