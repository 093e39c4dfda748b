# LMA-ERFNet on Cityscapes video (Paul et al., 2021): key 16, value 64,
# window 21 at 1/8, T=3 memory frames for training and 4 for testing,
# GatedFusion. Only the memory heads and the fusion are trained (Adam, lr
# 2e-4, weight decay 1e-4) on top of a trained single-frame ERFNet, e.g.
# mmseg's, converted to the split layout:
#   URL=https://download.openmmlab.com/mmsegmentation/v0.5/erfnet/erfnet_fcn_4x4_512x1024_160k_cityscapes/erfnet_fcn_4x4_512x1024_160k_cityscapes_20220704_162145-dc90157a.pth  # noqa: E501
#   python tools/convert/mmseg_erfnet_to_split.py "$URL" \
#     checkpoints/erfnet-split_fcn_4xb4-160k_cityscapes-512x1024.pth
# or the last checkpoint of
# configs/erfnet/erfnet-split_fcn_4xb4-160k_cityscapes-512x1024.py.
_base_ = [
    '../_base_/models/lma-erfnet.py', '../_base_/datasets/cityscapes-seq.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k_adam.py'
]
crop_size = (512, 1024)
data_preprocessor = dict(size=crop_size)
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    data_preprocessor=data_preprocessor,
    # memory_length is the FIFO length of streaming inference; it matches
    # the 4 memory frames of the test clips below.
    neck=dict(
        memory_length=4,
        fusion=dict(type='GatedFusion', dropout_ratio=0.3,
                    norm_cfg=norm_cfg)))
test_frame_offsets = (-4, -3, -2, -1)
train_dataloader = dict(batch_size=4, num_workers=4)
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    dataset=dict(frame_offsets=test_frame_offsets))
test_dataloader = val_dataloader
load_from = 'checkpoints/erfnet-split_fcn_4xb4-160k_cityscapes-512x1024.pth'
