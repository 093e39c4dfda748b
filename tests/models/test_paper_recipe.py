"""The model side of the ERFNet paper config
(configs/lma/lma-erfnet_paper_2xb5-50e_cityscapes-seq-1024x512.py): its
fusion is the authors' formula (per-channel gates, biased 3x3
projections), and with ``freeze_mode='train'`` the frozen ERFNet gets no
update while its BN statistics and dropout follow the training mode."""
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules

import lma_mmseg  # noqa: F401  (registers the components)

register_all_modules(init_default_scope=True)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PAPER_CFG = osp.join(
    ROOT, 'configs', 'lma',
    'lma-erfnet_paper_2xb5-50e_cityscapes-seq-1024x512.py')
H, W = 32, 64
NUM_CLASSES = 19


def build_paper_model(**overrides):
    cfg = Config.fromfile(PAPER_CFG)
    model_cfg = cfg.model
    model_cfg.data_preprocessor.size = (H, W)
    model_cfg.update(overrides)
    torch.manual_seed(0)
    model = revert_sync_batchnorm(MODELS.build(model_cfg))
    model.init_weights()
    return cfg, model


def randomise_bn(module, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.3)


def bn(x, layer):
    return F.batch_norm(x, layer.running_mean, layer.running_var,
                        layer.weight, layer.bias, False, 0.0, layer.eps)


def test_paper_fusion_is_the_authors_formula():
    """BN+Dropout2d(0.3)+ReLU on each input; g1, g2 = sigmoid(conv3x3(cat))
    with one gate per output channel; out = conv3x3(vQ) * g1 +
    conv3x3(mem) * g2 with biased projections; BN; ReLU (eval mode)."""
    _, model = build_paper_model()
    fusion = model.neck.fusion
    assert type(fusion).__name__ == 'GatedFusion'
    # 64 -> 128 projections with bias, 128 -> 128 gates each
    assert fusion.query_proj.weight.shape == (128, 64, 3, 3)
    assert fusion.memory_proj.weight.shape == (128, 64, 3, 3)
    assert fusion.query_proj.bias is not None
    assert fusion.memory_proj.bias is not None
    assert fusion.gates.weight.shape == (256, 128, 3, 3)
    assert fusion.query_pre[1].p == pytest.approx(0.3)
    assert fusion.out_norm.eps == pytest.approx(1e-3)
    randomise_bn(fusion)
    with torch.no_grad():  # non-zero biases, so that they count
        for conv in (fusion.query_proj, fusion.memory_proj, fusion.gates):
            conv.bias.normal_(0, 0.5)
    fusion.eval()
    gen = torch.Generator().manual_seed(1)
    vq = torch.randn(2, 64, 5, 7, generator=gen)
    mem = torch.randn(2, 64, 5, 7, generator=gen)

    q = F.relu(bn(vq, fusion.query_pre[0]))
    m = F.relu(bn(mem, fusion.memory_pre[0]))
    both = torch.cat([q, m], 1)
    w, b = fusion.gates.weight, fusion.gates.bias
    g1 = torch.sigmoid(F.conv2d(both, w[:128], b[:128], padding=1))
    g2 = torch.sigmoid(F.conv2d(both, w[128:], b[128:], padding=1))
    out_1 = F.conv2d(q, fusion.query_proj.weight, fusion.query_proj.bias,
                     padding=1)
    out_2 = F.conv2d(m, fusion.memory_proj.weight, fusion.memory_proj.bias,
                     padding=1)
    expected = F.relu(bn(out_1 * g1 + out_2 * g2, fusion.out_norm))

    out = fusion(vq, mem)
    assert out.shape == (2, 128, 5, 7)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # the gates differ per channel: the bias does not cancel in the BN
    assert (g1.std(dim=1) > 0).any()


def test_proj_bias_default_is_off():
    fusion = MODELS.build(
        dict(type='GatedFusion', query_channels=4, memory_channels=4,
             out_channels=8))
    assert fusion.query_proj.bias is None
    assert fusion.memory_proj.bias is None
    with pytest.raises(TypeError, match='proj_bias'):
        MODELS.build(
            dict(type='GatedFusion', query_channels=4, memory_channels=4,
                 out_channels=8, proj_bias='yes'))


def _batch(seed):
    gen = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(2):
        inputs.append(torch.randint(0, 256, (4, 3, H, W), generator=gen,
                                    dtype=torch.uint8))
        label = torch.randint(0, NUM_CLASSES, (1, H, W), generator=gen)
        label[:, :2] = 255
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=label)
        sample.set_metainfo(
            dict(img_shape=(H, W), ori_shape=(H, W), pad_shape=(H, W)))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def test_freeze_mode_train_frozen_weights_fixed_bn_stats_move():
    cfg, model = build_paper_model()
    assert model.freeze_mode == 'train'
    frozen = tuple(cfg.model['freeze'])
    assert frozen == ('backbone', 'decode_head')
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    assert type(optim_wrapper.optimizer).__name__ == 'Adam'

    params = {
        n: p.detach().clone()
        for n, p in model.named_parameters()
    }
    stats = {
        n: b.detach().clone()
        for n, b in model.named_buffers() if 'running_' in n
    }
    model.train()
    # frozen modules follow the training mode
    for name in frozen:
        module = getattr(model, name)
        assert all(m.training for m in module.modules()), name
    for step in range(3):
        batch = model.data_preprocessor(_batch(step), training=True)
        losses = model.loss(batch['inputs'], batch['data_samples'])
        loss, _ = model.parse_losses(losses)
        assert torch.isfinite(loss)
        optim_wrapper.update_params(loss)

    changed_neck = 0
    for name, p in model.named_parameters():
        if name.split('.')[0] in frozen:
            assert not p.requires_grad, name
            assert torch.equal(p, params[name]), f'{name} was updated'
        else:
            changed_neck += int(not torch.equal(p, params[name]))
    assert changed_neck > 0
    for prefix in ('backbone.', 'decode_head.'):
        moved = [
            n for n, b in model.named_buffers()
            if n.startswith(prefix) and 'running_' in n
            and not torch.equal(b, stats[n])
        ]
        assert moved, f'no BN running statistics of {prefix} changed'
    assert all(not torch.equal(b, stats[n])
               for n, b in model.named_buffers()
               if n.startswith('backbone.') and 'running_mean' in n)


def test_freeze_mode_train_dropout_active_and_eval_is_deterministic():
    _, model = build_paper_model()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 3, H, W, generator=gen)
    model.train()
    with torch.no_grad():
        a, b = model.backbone(x)[0], model.backbone(x)[0]
    assert not torch.equal(a, b)  # the frozen encoder's dropout is active
    model.eval()
    assert not any(m.training for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model.backbone(x)[0], model.backbone(x)[0])


def test_freeze_mode_eval_keeps_frozen_modules_in_eval():
    _, model = build_paper_model(freeze_mode='eval')
    model.train()
    assert not model.backbone.training and not model.decode_head.training
    assert model.neck.training


def test_freeze_mode_is_checked():
    with pytest.raises(ValueError, match='freeze_mode'):
        build_paper_model(freeze_mode='frozen')
