# Cityscapes video (leftImg8bit_sequence + gtFine): every annotated frame with
# its memory frames. Pipelines follow mmseg's cityscapes.py, applied with the
# same random parameters to every frame of a clip.

dataset_type = 'CityscapesVideoDataset'
data_root = 'data/cityscapes/'
crop_size = (512, 1024)
frame_offsets = (-3, -2, -1)  # memory frames, oldest first
train_pipeline = [
    dict(type='LoadClipFromFiles'),
    dict(
        type='ClipTransformBroadcaster',
        transforms=[
            dict(
                type='RandomResize',
                scale=(2048, 1024),
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
        transforms=[dict(type='Resize', scale=(2048, 1024), keep_ratio=True)]),
    # Labels are loaded after the resize: metrics compare at the original
    # resolution, as in mmseg.
    dict(type='LoadClipAnnotations'),
    dict(type='PackClipSegInputs'),
]
train_dataloader = dict(
    batch_size=2,
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
# Format-only prediction on the test split (no labels), for the benchmark
# server:
# test_dataloader = dict(dataset=dict(data_prefix=dict(
#     img_path='leftImg8bit_sequence/test', seg_map_path='')))
# test_evaluator = dict(type='CityscapesMetric', format_only=True,
#                       keep_results=True,
#                       output_dir='work_dirs/format_results')

val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
