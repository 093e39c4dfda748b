# LMA-ERFNet with the Local Memory Attention authors' training recipe
# (mattpfr/lmanet; README training command: --backbone erf --gpus 2
# --batch-size 5 --lr-start 2e-4 --lr-strategy plateau_08 --num-epochs 50
# --corr-size 21 --stm-queue-size 3 --fusion-strategy sigmoid-do1), for
# reproducing the paper's ERFNet result (+1.7 mIoU). The mmseg-recipe
# variant is lma-erfnet_4xb4-160k_cityscapes-seq-512x1024.py. Frames are
# 512x1024 (h x w) whole frames.
# Starts from the single-frame ERFNet trained at the same resolution and on
# the same data (the authors start from an ERFNet trained at 512x1024):
#   python tools/train.py \
#     configs/erfnet/erfnet-split_paper_2xb5-50e_cityscapes-seq-512x1024.py
# then copy its best checkpoint (best_mIoU_epoch_*.pth) to load_from below.
# Remaining differences from their code (README, "Differences from the
# authors' code"): 19 class logits here; 20 in theirs (models/lmanet.py
# Decoder_STM has a void logit, which models/losses.py and routines.py keep
# in the softmax and the argmax; utils/iou_eval.py counts a void prediction
# as a miss). ImageNet mean/std input normalisation here (as mmseg's ERFNet
# checkpoint was trained); [0, 1] RGB without normalisation in theirs
# (datasets/generic.py applies only ToTensor).
_base_ = [
    '../_base_/models/lma-erfnet.py',
    '../_base_/datasets/cityscapes-seq_paper-512x1024.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_50e_adam_plateau.py'
]
# Their BatchNorm2d layers use eps=1e-3 (models/erfnet.py, models/fusion.py)
# and become SyncBatchNorm on several GPUs (utils/loading.py).
norm_cfg = dict(type='SyncBN', requires_grad=True)
block_norm_cfg = dict(type='SyncBN', requires_grad=True, eps=1e-3)
data_preprocessor = dict(size=(512, 1024))  # whole frames, no padding
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(norm_cfg=block_norm_cfg),
    # models/lmanet.py: key 16, value 64 (3x3 convolutions), 21x21 local
    # correlation without scaling and zero padding (--corr-size 21), one
    # softmax over all memory positions; memory_length: the FIFO of
    # streaming inference holds the 4 memory frames of the test clips.
    neck=dict(
        key_channels=16,
        value_channels=64,
        window=21,
        dilation=1,
        scale=1.0,
        padding='zeros',
        memory_length=4,
        # models/fusion.py Fusion ('sigmoid-do1'): BN + Dropout2d(0.3) +
        # ReLU on both inputs, gates sigmoid(conv3x3(cat)) with one gate per
        # output channel (128 -> 128 each), projections conv3x3 64 -> 128
        # with bias, then BN and ReLU.
        fusion=dict(
            type='GatedFusion',
            dropout_ratio=0.3,
            gate_channels=128,
            gate_kernel_size=3,
            proj_kernel_size=3,
            proj_bias=True,
            norm_cfg=block_norm_cfg)),
    decode_head=dict(
        norm_cfg=norm_cfg,
        block_norm_cfg=block_norm_cfg,
        # models/lmanet.py Decoder_STM: the ERFNet decoder without dropout
        # (non_bottleneck_1d blocks with dropprob 0, no dropout before the
        # classifier); mmseg's head has Dropout2d(0.1) before conv_seg,
        # which freeze_mode='train' would keep active in the frozen head.
        dropout_ratio=0.0,
        # models/losses.py: class-weighted cross-entropy on the key frame.
        loss_decode=dict(
            _delete_=True,
            type='WeightedCrossEntropyLoss',
            class_weight={{_base_.class_weight}},
            avg_non_ignore=True,
            loss_weight=1.0)),
    # utils/loading.py filter_model_params_optimization: encoder and decoder
    # get no gradient (--train-encoder / --train-decoder not set) ...
    freeze=('backbone', 'decode_head'),
    # ... but routines.py puts the whole model in train(): BN normalises
    # with batch statistics and updates its running statistics, dropout
    # stays active in the frozen encoder (mmseg's ERFNet: Dropout 0.1 in
    # the encoder blocks; the authors' encoder trains with Dropout2d
    # 0.03/0.3); the decoder has none (dropout_ratio above).
    freeze_mode='train')
# T=3 memory frames for training and for the validation after every epoch
# that picks the best one (routines.py train(): the val set is built with
# the training window, --stm-queue-size 3); T=4 at test (README evaluation:
# --stm-queue-size 4), which is also the streaming FIFO (memory_length).
test_frame_offsets = (-4, -3, -2, -1)
train_dataloader = dict(batch_size=5, num_workers=4)  # --batch-size 5
val_dataloader = dict(batch_size=1, num_workers=4)
test_dataloader = dict(
    batch_size=1,
    num_workers=4,
    dataset=dict(frame_offsets=test_frame_offsets))
log_processor = dict(by_epoch=True)
randomness = dict(seed=0)  # main.py: torch.manual_seed(0)
load_from = 'checkpoints/erfnet-split_paper_2xb5-50e_cityscapes-seq-512x1024.pth'  # noqa
