# LMA-PSPNet (ResNet-101-D8) with the Local Memory Attention authors'
# training recipe (mattpfr/lmanet; README training command: --backbone
# psp101 --gpus 6 --batch-size 1 --lr-start 2e-4 --lr-strategy plateau_08
# --num-epochs 50 --corr-size 21 --stm-queue-size 3 --fusion-strategy
# sigmoid-down1), for reproducing the paper's PSPNet-101 result (+2.1 mIoU).
# The mmseg-recipe variant is lma-pspnet_r101-d8_4xb2-80k_cityscapes-seq-
# 512x1024.py. Whole frames resized to 1025x2049 (h x w; their work_res for
# psp101), the same flip and translation as ERFNet, class-weighted loss,
# evaluation at 1025x2049 and at full resolution. Starts from mmseg's
# single-frame PSPNet-101 (the authors: semseg's PSPNet-101).
# Remaining differences from their code (README, "Differences from the
# authors' code"), all following from mmseg's checkpoint or fixing their
# code:
# - 19 class logits; theirs append a constant-0 logit as a 20th, void class
#   (models/pspnet.py PSPDecoder), so a pixel whose 19 logits are all
#   negative is predicted void and counts as a miss (utils/iou_eval.py).
# - mmseg's PSPNet: ResNetV1c stem 32-32-64, the first block of layer3 /
#   layer4 with contracted dilation (1 / 2), align_corners=False; semseg's:
#   stem 64-64-128 (models/resnet.py deep_base), dilation 2 / 4 in every
#   layer3 / layer4 block, align_corners=True (models/pspnet.py).
# - Input: ImageNet mean/std normalised RGB (mmseg's data preprocessor, as
#   the checkpoint was trained). Their PSPNet input path cannot run:
#   datasets/generic.py passes each psp101 frame through the label
#   transform (ToLabel, Relabel) instead of normalising it, which turns the
#   [0, 1] image into an integer tensor with an extra dimension.
_base_ = [
    '../_base_/models/lma-pspnet_r50-d8.py',
    '../_base_/datasets/cityscapes-seq_paper-512x1024.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_50e_adam_plateau.py'
]
work_size = (2049, 1025)  # (w, h): datasets/cityscapes.py work_res
norm_cfg = dict(type='SyncBN', requires_grad=True)
# models/fusion.py FusionDown: BatchNorm2d(eps=1e-3).
fusion_norm_cfg = dict(type='SyncBN', requires_grad=True, eps=1e-3)
data_preprocessor = dict(size=(1025, 2049))  # whole frames, no padding
model = dict(
    data_preprocessor=data_preprocessor,
    # Every weight but the neck's comes from load_from.
    pretrained=None,
    backbone=dict(depth=101),
    # models/lmanet.py: key 128 (3x3 convolution), value = the raw layer4
    # feature, 21x21 local correlation (--corr-size 21), T=3 memory frames
    # for training and test (README evaluation: --stm-queue-size 3).
    neck=dict(
        key_channels=128,
        value_channels=None,
        window=21,
        dilation=1,
        scale=1.0,
        padding='zeros',
        memory_length=3,
        # models/fusion.py FusionDown ('sigmoid-down1'): 1x1 down to 256
        # channels with bias, BN, ReLU, two 1x1 up-projections to sigmoid
        # gates on the raw inputs, BN, ReLU (2,106,368 parameters, theirs
        # and ours). Their forward applies the query's down-projection to
        # both inputs (the memory one is unused); ours has one per input,
        # as the paper describes.
        fusion=dict(
            type='GatedDownFusion',
            channels=256,
            down_bias=True,
            norm_cfg=fusion_norm_cfg)),
    decode_head=dict(
        norm_cfg=norm_cfg,
        # models/losses.py: ERFNet's class weights for PSPNet too.
        loss_decode=dict(
            _delete_=True,
            type='WeightedCrossEntropyLoss',
            class_weight={{_base_.class_weight}},
            avg_non_ignore=True,
            loss_weight=1.0)),
    # Their LMA-PSPNet has no auxiliary head: the loss is the main one.
    auxiliary_head=None,
    # utils/loading.py: encoder, PPM and classifier get no gradient ...
    freeze=('backbone', 'decode_head'),
    # ... while the model is in train() mode (BN batch statistics, dropout
    # of the classifier active).
    freeze_mode='train',
    test_cfg=dict(mode='whole'))

resize = dict(
    type='Resize', scale=work_size, keep_ratio=False, backend='pillow')
train_pipeline = [
    dict(type='LoadClipFromFiles'),
    dict(
        type='ClipTransformBroadcaster',
        transforms=[
            resize,
            dict(type='RandomFlip', prob=0.5),
            # the labels' fill per direction as the dataset base explains
            dict(type='RandomTranslate', max_shift=2, img_fill=0,
                 seg_fill=255, seg_fill_negative=0),
        ]),
    dict(type='PackClipSegInputs'),
]
test_pipeline = [
    dict(type='LoadClipFromFiles'),
    dict(type='ClipTransformBroadcaster', transforms=[resize]),
    dict(type='ResetOriShape'),
    dict(type='PackClipSegInputs'),
]
train_dataloader = dict(
    batch_size=1, num_workers=4,  # --batch-size 1 on each of 6 GPUs
    dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=4, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
log_processor = dict(by_epoch=True)
randomness = dict(seed=0)  # main.py: torch.manual_seed(0)
load_from = 'https://download.openmmlab.com/mmsegmentation/v0.5/pspnet/pspnet_r101-d8_512x1024_80k_cityscapes/pspnet_r101-d8_512x1024_80k_cityscapes_20200606_112211-e1e1100f.pth'  # noqa
