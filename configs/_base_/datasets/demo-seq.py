# Synthetic demo video data (tools/make_demo_data.py --out data/demo): the
# Cityscapes video layout at 128x256, frame 19 of every 30-frame snippet
# annotated and partly hidden by glare/fog. A benchmark for the memory
# mechanism, not Cityscapes.

dataset_type = 'CityscapesVideoDataset'
data_root = 'data/demo'
img_scale = (256, 128)  # (w, h) of the generated frames
crop_size = (128, 256)  # (h, w)
frame_offsets = (-3, -2, -1)  # memory frames, oldest first

# Clips: every frame gets the same random resize, crop and flip.
train_pipeline = [
    dict(type='LoadClipFromFiles'),
    dict(
        type='ClipTransformBroadcaster',
        transforms=[
            dict(
                type='RandomResize',
                scale=img_scale,
                ratio_range=(1.0, 1.5),
                keep_ratio=True),
            dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
            dict(type='RandomFlip', prob=0.5),
        ]),
    dict(type='PackClipSegInputs'),
]
test_pipeline = [
    dict(type='LoadClipFromFiles'),
    dict(type='PackClipSegInputs'),
]
# Single frames (the key frames of the same samples), for the single-frame
# baseline trained and tested on the same data.
frame_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadCheckedAnnotations'),
    dict(
        type='RandomResize',
        scale=img_scale,
        ratio_range=(1.0, 1.5),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
frame_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadCheckedAnnotations'),
    dict(type='PackSegInputs'),
]

train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='leftImg8bit_sequence/train',
            seg_map_path='gtFine/train'),
        frame_offsets=frame_offsets,
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='leftImg8bit_sequence/val', seg_map_path='gtFine/val'),
        frame_offsets=frame_offsets,
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
# The unlabelled test split, for format-only prediction, e.g.
# test_dataloader = dict(dataset=dict(data_prefix=dict(
#     img_path='leftImg8bit_sequence/test', seg_map_path='')))
# test_evaluator = dict(type='CityscapesMetric', format_only=True,
#                       keep_results=True,
#                       output_dir='work_dirs/format_results')

val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
