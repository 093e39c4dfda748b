# Single-frame ERFNet split into ERFNetEncoder (backbone, 1/8 scale, 128
# channels) and ERFNetDecoderHead (mmseg ERFNet's decoder + FCN classifier).
# Same layers and defaults as mmseg's _base_/models/erfnet_fcn.py; an mmseg
# ERFNet checkpoint loads after tools/convert/mmseg_erfnet_to_split.py.
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='ERFNetEncoder',
        in_channels=3,
        enc_downsample_channels=(16, 64, 128),
        enc_stage_non_bottlenecks=(5, 8),
        enc_non_bottleneck_dilations=(2, 4, 8, 16),
        enc_non_bottleneck_channels=(64, 128),
        dropout_ratio=0.1,
        init_cfg=None),
    decode_head=dict(
        type='ERFNetDecoderHead',
        in_channels=128,
        in_index=0,
        dec_upsample_channels=(64, 16),
        dec_stages_non_bottleneck=(2, 2),
        dec_non_bottleneck_channels=(64, 16),
        channels=128,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
