# Local Memory Attention added to SegFormer (MiT-B1) on VSPW, by config
# only. The neck reads the last encoder stage (in_index=3: 512 channels at
# 1/32) of the key frame and of the memory frames at CFFM's offsets
# (-9, -6, -3) and replaces it by the fused map; the all-MLP head still reads
# the four stages. At 1/32 of 480x853 frames (15x27 cells) a 7x7 window
# spans about the image area of the paper's 21x21 window at 1/8. Starts from
# the single-frame SegFormer-B1 trained on VSPW
# (configs/segformer/segformer_mit-b1_8xb2-160k_vspw-480x480.py) and trains
# the memory heads and the fusion (Adam, lr 2e-4, weight decay 1e-4).
_base_ = [
    'mmseg::_base_/models/segformer_mit-b0.py', '../_base_/datasets/vspw.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k_adam.py'
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
    backbone=dict(
        embed_dims=64, num_heads=[1, 2, 5, 8], num_layers=[2, 2, 2, 2]),
    decode_head=dict(in_channels=[64, 128, 320, 512], num_classes=124),
    neck=dict(
        type='LocalMemoryNeck',
        in_channels=512,
        key_channels=64,
        value_channels=None,
        window=7,
        in_index=3,
        fusion=dict(type='GatedDownFusion', channels=128, norm_cfg=norm_cfg)),
    freeze_memory_encoder=True,
    freeze=('backbone', 'decode_head'))
train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    dataset=dict(frame_offsets=memory_offsets))
val_dataloader = dict(
    batch_size=1, num_workers=4, dataset=dict(frame_offsets=memory_offsets))
test_dataloader = val_dataloader
load_from = 'work_dirs/segformer_mit-b1_8xb2-160k_vspw-480x480/iter_160000.pth'  # noqa
