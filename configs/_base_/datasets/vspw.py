# VSPW (VSPW_480p layout): every labelled frame of the split's videos is a
# key frame, with memory frames at CFFM's strided offsets (-9, -6, -3); near
# the start of a video the nearest existing frame is used. 124 classes: mask
# values 1..124, while 0 ("others") and 255 (void) are not evaluated
# (reduce_zero_label, as the VSPW toolkit and CFFM/MRCFA).
#   data/VSPW_480p/{train,val,test}.txt
#   data/VSPW_480p/data/{video}/origin/{frame}.jpg
#   data/VSPW_480p/data/{video}/mask/{frame}.png
# Evaluation: mIoU on val, and for tools/test.py the video consistency VC_8
# and VC_16 of the VSPW toolkit over all val frames (stride 1).

dataset_type = 'VSPWDataset'
data_root = 'data/VSPW_480p'
img_scale = (853, 480)  # (w, h), as CFFM
crop_size = (480, 480)  # (h, w)
# memory frames, oldest first; an LMA config sets them to its model's
# memory_offsets (stated once there)
frame_offsets = (-9, -6, -3)
train_pipeline = [
    dict(type='LoadClipFromFiles'),
    dict(
        type='ClipTransformBroadcaster',
        transforms=[
            dict(
                type='RandomResize',
                scale=img_scale,
                ratio_range=(0.5, 2.0),
                keep_ratio=True),
            dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
            dict(type='RandomFlip', prob=0.5),
            dict(type='PhotoMetricDistortion'),
        ]),
    dict(type='PackClipSegInputs'),
]
test_pipeline = [
    dict(type='LoadClipFromFiles', with_label=False),
    dict(
        type='ClipTransformBroadcaster',
        transforms=[dict(type='Resize', scale=img_scale, keep_ratio=True)]),
    # Labels are loaded after the resize: metrics compare at the original
    # resolution, as in mmseg.
    dict(type='LoadClipAnnotations'),
    dict(type='PackClipSegInputs'),
]
# Single frames (the key frames of the same samples), for the single-frame
# baselines the LMA models start from.
frame_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadCheckedAnnotations'),
    dict(
        type='RandomResize',
        scale=img_scale,
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
frame_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadCheckedAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='train.txt',
        data_prefix=dict(img_path='data', seg_map_path='data'),
        frame_offsets=frame_offsets,
        missing_frames='nearest',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='val.txt',
        data_prefix=dict(img_path='data', seg_map_path='data'),
        frame_offsets=frame_offsets,
        missing_frames='nearest',
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader

# Validation during training: mIoU only. Testing: mIoU and the VSPW video
# consistency over windows of 8 and 16 consecutive frames.
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='VideoConsistencyMetric', windows=(8, 16)),
]
