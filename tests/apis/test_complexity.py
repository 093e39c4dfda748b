"""FLOPs of a streaming step, the local attention op included."""
import torch
from mmengine import ConfigDict
from mmengine.analysis import get_model_complexity_info
from mmseg.registry import MODELS

from helpers.tiny_models import lma_model_cfg, single_model_cfg
from lma_mmseg.apis import streaming_complexity


def test_streaming_complexity_counts_attention():
    lma = MODELS.build(lma_model_cfg(memory_length=3))
    single = MODELS.build(single_model_cfg())
    got = streaming_complexity(lma, (64, 48))
    base = streaming_complexity(single, (64, 48))
    # 1/8 map 8x6, T=3, window 5, key 8 + value 16 channels
    assert got['attention_flops'] == 8 * 6 * 3 * 5 * 5 * (8 + 16)
    # outside the modules: the same resize of the logits in both
    resize = got['flops'] - sum(got['flops_by_module'].values())
    assert resize > 0
    assert base['flops'] - sum(base['flops_by_module'].values()) == resize
    assert got['flops_by_module']['backbone'] == \
        base['flops_by_module']['backbone']
    # the memory parts: 4 conv heads (3x3), the attention and the fusion
    heads = 8 * 6 * 9 * 64 * (8 + 8 + 16 + 16)
    assert got['flops_by_module']['neck'] > heads + got['attention_flops']
    assert got['flops'] - base['flops'] == got['flops_by_module']['neck']
    assert got['params'] > base['params']
    assert streaming_complexity(lma, (64, 48), memory_length=1)[
        'attention_flops'] == got['attention_flops'] // 3
    # a single-frame model: as mmengine's complexity tool counts its
    # forward, plus the resize of the logits
    info = get_model_complexity_info(
        single,
        inputs=(torch.zeros(1, 3, 64, 48), ),
        show_table=False,
        show_arch=False)
    assert info['flops'] + resize == base['flops']
    assert info['params'] == base['params']


def test_streaming_complexity_counts_slide_steps():
    lma = MODELS.build(lma_model_cfg(memory_length=2))
    whole = streaming_complexity(lma, (64, 48))
    lma.test_cfg = ConfigDict(mode='slide', crop_size=(32, 48),
                              stride=(16, 48))
    slide = streaming_complexity(lma, (64, 48))
    # 3 windows of 32x48, each with its own memory: 4x4 maps at 1/8
    assert slide['attention_flops'] == 3 * 4 * 6 * 2 * 5 * 5 * (8 + 16)
    assert whole['attention_flops'] == 8 * 6 * 2 * 5 * 5 * (8 + 16)
    assert slide['flops'] > whole['flops']
