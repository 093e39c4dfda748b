"""The demo LMA-ERFNet with one encoder block per stage, for the tests of
``torch.compile`` and export of its per-frame step (tests/apis/test_compile.py
and tests/apis/test_export.py): they check wiring (one graph, the op's fake
and backward kernels under inductor, the exported programs), not capacity,
and the smaller encoder compiles in less time."""
import os.path as osp

import torch

from . import ROOT

CONFIG = osp.join(ROOT, 'configs/demo/lma-erfnet_demo.py')
SMALL_ENCODER = dict(enc_stage_non_bottlenecks=(1, 1),
                     enc_non_bottleneck_dilations=(2, ))
H, W = 64, 128


def small_encoder_options():
    """``SMALL_ENCODER`` as config options (``--cfg-options`` keys)."""
    return {f'model.backbone.{k}': v for k, v in SMALL_ENCODER.items()}


def demo_step_model():
    """The model in eval mode, its BN statistics non-trivial."""
    from lma_mmseg.apis import init_model
    torch.manual_seed(0)
    model = init_model(CONFIG, device='cpu',
                       cfg_options=small_encoder_options())
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
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
