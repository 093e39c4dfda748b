"""The demo LMA-ERFNet with the encoder's three downsampler blocks and
no non-bottleneck block (encoder and decoder), for the tests of
``torch.compile`` and export of its per-frame step
(tests/apis/test_compile.py and tests/apis/test_export.py): they check
wiring (one graph, the op's fake and backward kernels under inductor, the
exported programs), not capacity, and every block less is a few kernels
less for inductor to compile (the compiled network's training iteration:
40 C++ kernels with one encoder block, 31 without; test_compile.py and
test_export.py together 222 -> 187 s on the 2-core machine). The model
keeps one set of BN statistics (``memory_norm_stats='shared'``): the demo
recipe's second encoder pass (the memory's own statistics) is the same
backbone with other buffers, and under inductor it took the compiled step
of the model with one encoder block from 53 to 63 C++ kernels (18.7 ->
31.7 s to compile, one process on the 2-core machine);
tests/apis/test_compile.py captures the recipe's step in one graph with
``aot_eager`` and tests/models/test_video_segmentor.py exports it."""
import os.path as osp

import torch

from . import ROOT
from .tiny_models import randomise_bn

CONFIG = osp.join(ROOT, 'configs/demo/lma-erfnet_demo.py')
H, W = 64, 128


def small_model_options():
    """The smaller encoder and decoder as config options (the keys of
    ``Config.merge_from_dict`` and of ``--cfg-options``)."""
    return {
        'model.backbone.enc_stage_non_bottlenecks': (0, 0),
        'model.backbone.enc_non_bottleneck_dilations': (2, ),
        'model.decode_head.dec_stages_non_bottleneck': (0, 0),
        'model.memory_norm_stats': 'shared',
    }


def demo_step_model(**options):
    """The model in eval mode, its BN statistics non-trivial; ``options``
    (config keys) change :func:`small_model_options`."""
    from lma_mmseg.apis import init_model
    torch.manual_seed(0)
    model = init_model(CONFIG, device='cpu',
                       cfg_options=dict(small_model_options(), **options))
    randomise_bn(model)
    return model


def eager_stream(model, frames):
    """The eager step's logits for each frame of a stream from an empty
    memory."""
    memory, out = None, []
    with torch.no_grad():
        for frame in frames:
            logits, memory = model.step(frame, memory)
            out.append(logits)
    return out
