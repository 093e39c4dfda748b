# LMA-PSPNet: mmseg's PSPNet (ResNet-50-D8) with a Local Memory Attention
# neck on layer4 (2048 channels at 1/8, the raw feature as value), before
# the pyramid pooling head (Paul et al., 2021). The neck passes the other
# backbone outputs through, so the auxiliary FCN head reads layer3 of the
# key frame.
_base_ = ['mmseg::_base_/models/pspnet_r50-d8.py']
data_preprocessor = dict(type='VideoSegDataPreProcessor')
model = dict(
    type='VideoEncoderDecoder',
    data_preprocessor=data_preprocessor,
    neck=dict(
        type='LocalMemoryNeck',
        in_channels=2048,
        key_channels=128,
        value_channels=None,
        window=21,
        dilation=1,
        scale=1.0,
        padding='zeros',
        memory_length=3,
        in_index=3,
        fusion=dict(type='GatedDownFusion', channels=256)),
    freeze_memory_encoder=True,
    # Paper setting: train the memory heads and the fusion only on top of a
    # trained single-frame PSPNet. With freeze=None the whole model is
    # fine-tuned and the auxiliary head on layer3 trains the backbone too.
    freeze=('backbone', 'decode_head', 'auxiliary_head'))
