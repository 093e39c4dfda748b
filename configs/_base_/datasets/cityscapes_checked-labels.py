# mmseg's single-frame Cityscapes pipelines (mmseg::_base_/datasets/
# cityscapes.py, 512x1024 crops) with the label loader that checks the class
# range: LoadCheckedAnnotations refuses a label file with a value outside
# [0, 19) other than 255 (labelIds instead of labelTrainIds, say), naming
# the file, where mmseg's LoadAnnotations passes it on and IoUMetric leaves
# it out of the mIoU without a word. The names differ from mmseg's, so this
# file can sit next to mmseg's configs in a _base_ list; a config sets its
# dataloaders' pipelines (and tta_pipeline) to these.
checked_labels = dict(type='LoadCheckedAnnotations', num_classes=19)
checked_train_pipeline = [
    dict(type='LoadImageFromFile'),
    checked_labels,
    dict(
        type='RandomResize',
        scale=(2048, 1024),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=(512, 1024), cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
checked_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 1024), keep_ratio=True),
    checked_labels,
    dict(type='PackSegInputs')
]
checked_tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(type='Resize', scale_factor=r, keep_ratio=True)
                for r in [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
            ],
            [
                dict(type='RandomFlip', prob=0., direction='horizontal'),
                dict(type='RandomFlip', prob=1., direction='horizontal')
            ], [checked_labels], [dict(type='PackSegInputs')]
        ])
]
