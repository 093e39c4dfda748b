# LMA-ERFNet: the split ERFNet with a Local Memory Attention neck between
# the 1/8 encoder (128 channels) and the decoder (Paul et al., 2021).
_base_ = ['./erfnet-split.py']
data_preprocessor = dict(type='VideoSegDataPreProcessor')
model = dict(
    type='VideoEncoderDecoder',
    data_preprocessor=data_preprocessor,
    neck=dict(
        type='LocalMemoryNeck',
        in_channels=128,
        key_channels=16,
        value_channels=64,
        window=21,
        dilation=1,
        scale=1.0,
        padding='zeros',
        memory_length=3,
        in_index=0,
        fusion=dict(type='GatedFusion', dropout_ratio=0.3)),
    # The memory frames go through the backbone without gradient.
    freeze_memory_encoder=True,
    # As in the paper, only the memory heads and the fusion are trained on
    # top of a trained single-frame ERFNet; freeze=None fine-tunes all.
    freeze=('backbone', 'decode_head'))
