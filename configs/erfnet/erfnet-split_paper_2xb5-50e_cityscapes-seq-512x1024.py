# The single-frame twin of
# configs/lma/lma-erfnet_paper_2xb5-50e_cityscapes-seq-512x1024.py: the
# split ERFNet (plain EncoderDecoder) on the key frames of the same samples,
# whole frames resized to 512x1024, the same flip and +-2 px translation,
# the same class-weighted loss, schedule and evaluation (512x1024 and full
# resolution). Fine-tunes mmseg's ERFNet (trained on 512x1024 crops of
# full-resolution frames, converted to the split layout with
# tools/convert/mmseg_erfnet_to_split.py) to the working resolution; its
# best checkpoint is the LMA model's starting point, and its val mIoU the
# single-frame row of the comparison.
# Remaining differences from the authors' single-frame ERFNet (README,
# "Differences from the authors' code"): 19 class logits (theirs 20, with a
# void logit) and ImageNet mean/std input normalisation (theirs [0, 1] RGB),
# both as mmseg's ERFNet checkpoint was trained.
_base_ = [
    '../_base_/models/erfnet-split.py',
    '../_base_/datasets/cityscapes-seq_paper-512x1024.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_50e_adam_plateau.py'
]
norm_cfg = dict(type='SyncBN', requires_grad=True)
block_norm_cfg = dict(type='SyncBN', requires_grad=True, eps=1e-3)
data_preprocessor = dict(size=(512, 1024))  # whole frames, no padding
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(norm_cfg=block_norm_cfg),
    decode_head=dict(
        norm_cfg=norm_cfg,
        block_norm_cfg=block_norm_cfg,
        # The authors' ERFNet decoder has no dropout (models/erfnet.py
        # Decoder, models/lmanet.py Decoder_STM); mmseg's head has
        # Dropout2d(0.1) before conv_seg. The LMA model keeps this decoder
        # frozen in train mode, also without dropout.
        dropout_ratio=0.0,
        loss_decode=dict(
            _delete_=True,
            type='WeightedCrossEntropyLoss',
            class_weight={{_base_.class_weight}},
            avg_non_ignore=True,
            loss_weight=1.0)))
# Key frames only: no memory frames are read.
train_dataloader = dict(
    batch_size=5,
    num_workers=4,
    dataset=dict(frame_offsets=(),
                 pipeline={{_base_.frame_train_pipeline}}))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    dataset=dict(frame_offsets=(), pipeline={{_base_.frame_test_pipeline}}))
test_dataloader = val_dataloader
log_processor = dict(by_epoch=True)
randomness = dict(seed=0)
load_from = 'checkpoints/erfnet-split_fcn_4xb4-160k_cityscapes-512x1024.pth'
