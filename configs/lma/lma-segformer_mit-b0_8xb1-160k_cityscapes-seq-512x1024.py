# Local Memory Attention added to mmseg's SegFormer (MiT-B0) by config only.
# The neck reads the last encoder stage (in_index=3: 256 channels at 1/32)
# and replaces it by the fused map; the all-MLP head still reads the four
# stages. At 1/32 a 7x7 window spans about the image area of the paper's
# 21x21 window at 1/8. Starts from mmseg's single-frame SegFormer and trains
# the memory heads and the fusion; slide inference as mmseg's SegFormer
# (the same windows are cut from every frame of a clip).
_base_ = [
    'mmseg::_base_/models/segformer_mit-b0.py',
    '../_base_/datasets/cityscapes-seq.py', '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_160k_adam.py'
]
crop_size = (512, 1024)
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(type='VideoSegDataPreProcessor', size=crop_size)
model = dict(
    type='VideoEncoderDecoder',
    data_preprocessor=data_preprocessor,
    neck=dict(
        type='LocalMemoryNeck',
        in_channels=256,
        key_channels=32,
        value_channels=None,
        window=7,
        memory_length=3,
        in_index=3,
        fusion=dict(type='GatedDownFusion', channels=128, norm_cfg=norm_cfg)),
    freeze_memory_encoder=True,
    freeze=('backbone', 'decode_head'),
    test_cfg=dict(mode='slide', crop_size=(1024, 1024), stride=(768, 768)))
train_dataloader = dict(batch_size=1, num_workers=4)
val_dataloader = dict(batch_size=1, num_workers=4)
test_dataloader = val_dataloader
load_from = 'https://download.openmmlab.com/mmsegmentation/v0.5/segformer/segformer_mit-b0_8x1_1024x1024_160k_cityscapes/segformer_mit-b0_8x1_1024x1024_160k_cityscapes_20211208_101857-e7f88502.pth'  # noqa
