# Cityscapes video as the Local Memory Attention authors' code uses it
# (mattpfr/lmanet, datasets/generic.py and datasets/transform.py): whole
# frames resized to 512x1024 (h x w; no crops, no scale jitter, no
# photometric distortion), a random horizontal flip and a random translation
# of up to 2 px drawn once per clip, evaluation at 512x1024 against
# nearest-downsampled labels. T=3 memory frames for training and for the
# validation that picks the best epoch (routines.py: the val set is built
# with the training window); models set the test clips' frame_offsets.
# Full-resolution mIoU is reported too (FullResIoUMetric, keys
# full_res/...).

dataset_type = 'CityscapesVideoDataset'
data_root = 'data/cityscapes/'
work_size = (1024, 512)  # (w, h): their work_res (512, 1024) for ERFNet
frame_offsets = (-3, -2, -1)  # T=3 memory frames (--stm-queue-size 3)
# Their resize: torchvision Resize of PIL images, bilinear for frames and
# nearest for labels; mmcv's pillow backend does the same resize.
resize = dict(
    type='Resize', scale=work_size, keep_ratio=False, backend='pillow')
train_pipeline = [
    dict(type='LoadClipFromFiles'),
    dict(
        type='ClipTransformBroadcaster',
        transforms=[
            resize,
            # MyCoTransform: flip with probability 0.5, then shift by
            # randint(-2, 2) px along each axis, the same for all frames
            # (ImageOps.expand on the left / top, then a crop back to the
            # size); frames filled with 0; labels with 255 (ignored) where
            # a positive shift uncovers them (left columns, top rows) and
            # with 0 (road) where a negative one does (right columns,
            # bottom rows: the crop reaches past the image), corners
            # included. The default of RandomTranslate is 255 everywhere.
            dict(type='RandomFlip', prob=0.5),
            dict(type='RandomTranslate', max_shift=2, img_fill=0,
                 seg_fill=255, seg_fill_negative=0),
        ]),
    dict(type='PackClipSegInputs'),
]
# Validation and test at the working resolution: labels are loaded before
# the resize (nearest) and ResetOriShape keeps the predictions at 512x1024.
test_pipeline = [
    dict(type='LoadClipFromFiles'),
    dict(type='ClipTransformBroadcaster', transforms=[resize]),
    dict(type='ResetOriShape'),
    dict(type='PackClipSegInputs'),
]
# The single-frame twin: the key frames of the same samples, the same
# resize, flip and translation.
frame_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadCheckedAnnotations'),
    resize,
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomTranslate', max_shift=2, img_fill=0, seg_fill=255,
         seg_fill_negative=0),
    dict(type='PackSegInputs'),
]
frame_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadCheckedAnnotations'),
    resize,
    dict(type='ResetOriShape'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=5,
    num_workers=4,
    persistent_workers=True,
    # Epochs over the 2975 annotated frames, shuffled (DistributedSampler).
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='leftImg8bit_sequence/train',
            seg_map_path='gtFine/train'),
        frame_offsets=frame_offsets,
        missing_frames='error',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='leftImg8bit_sequence/val', seg_map_path='gtFine/val'),
        frame_offsets=frame_offsets,
        missing_frames='error',
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader

# mIoU at the working resolution (the number the authors report and select
# the best epoch by), and at full resolution: the predicted label map
# upsampled by nearest neighbour to the 1024x2048 label files, as their
# --use-orig-res evaluation.
val_evaluator = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='FullResIoUMetric', iou_metrics=['mIoU'], prefix='full_res'),
]
test_evaluator = val_evaluator

# ERFNet's Cityscapes class weights (trainIds 0..18), which the authors'
# loss uses for both backbones (datasets/cityscapes.py "weight",
# models/losses.py: NLLLoss(weights, ignore_index=19)); models use them in
# WeightedCrossEntropyLoss.
class_weight = [
    2.8149201869965, 6.9850029945374, 3.7890393733978, 9.9428062438965,
    9.7702074050903, 9.5110931396484, 10.311357498169, 10.026463508606,
    4.6323022842407, 9.5608062744141, 7.8698215484619, 9.5168733596802,
    10.373730659485, 6.6616044044495, 10.260489463806, 10.287888526917,
    10.289801597595, 10.405355453491, 10.138095855713
]
