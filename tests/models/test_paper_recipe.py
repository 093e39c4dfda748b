"""The model side of the paper configs. ERFNet
(configs/lma/lma-erfnet_paper_2xb5-50e_cityscapes-seq-512x1024.py): its
fusion is the authors' formula (per-channel gates, biased 3x3
projections), and with ``freeze_mode='train'`` the frozen ERFNet gets no
update while its BN statistics and the encoder's dropout follow the
training mode; its decode head has no dropout, as the authors' decoder.
PSPNet-101 (configs/lma/lma-pspnet_r101-d8_paper_6xb1-50e_cityscapes-seq-
1025x2049.py): the fusion's down-projections have biases, as the authors'
FusionDown."""
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
    'lma-erfnet_paper_2xb5-50e_cityscapes-seq-512x1024.py')
PSP_PAPER_CFG = osp.join(
    ROOT, 'configs', 'lma',
    'lma-pspnet_r101-d8_paper_6xb1-50e_cityscapes-seq-1025x2049.py')
H, W = 32, 64
NUM_CLASSES = 19


def build_paper_model(head_dropout=None, **overrides):
    cfg = Config.fromfile(PAPER_CFG)
    model_cfg = cfg.model
    model_cfg.data_preprocessor.size = (H, W)
    model_cfg.update(overrides)
    if head_dropout is not None:
        model_cfg.decode_head.dropout_ratio = head_dropout
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


def _head_outputs(model, seed=4):
    """Two train-mode runs of the decode head on the same features."""
    gen = torch.Generator().manual_seed(seed)
    feats = [torch.randn(2, 128, H // 8, W // 8, generator=gen)]
    with torch.no_grad():
        return model.decode_head(feats), model.decode_head(feats)


def test_frozen_erfnet_head_has_no_active_dropout():
    """The authors' ERFNet decoder has no dropout (Decoder_STM): the frozen
    head follows the training mode (BN batch statistics) but drops
    nothing, while the frozen encoder's dropout stays active."""
    cfg, model = build_paper_model()
    assert cfg.model.decode_head.dropout_ratio == 0
    model.train()
    head = model.decode_head
    assert head.training and 'decode_head' in model.freeze
    assert head.dropout is None
    dropouts = [
        m for m in head.modules()
        if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0
    ]
    assert dropouts == []
    a, b = _head_outputs(model)
    assert a.shape == (2, NUM_CLASSES, H // 2, W // 2)  # 1/2 scale
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the same head with mmseg's Dropout2d(0.1) before conv_seg differs
    _, with_dropout = build_paper_model(head_dropout=0.1)
    with_dropout.train()
    a, b = _head_outputs(with_dropout)
    assert not torch.equal(a, b)


def test_pspnet_paper_fusion_down_projections_have_biases():
    """FusionDown (models/fusion.py): four biased 1x1 convolutions (2048
    -> 256 twice, 256 -> 2048 twice) and two BN layers: 2,106,368
    parameters; without the down-projections' biases 512 fewer."""
    cfg = Config.fromfile(PSP_PAPER_CFG)
    fusion_cfg = cfg.model.neck.fusion
    assert fusion_cfg.down_bias is True
    channels = cfg.model.neck.in_channels
    assert (channels, fusion_cfg.channels) == (2048, 256)

    def build_fusion(**kwargs):
        return revert_sync_batchnorm(
            MODELS.build(
                dict(fusion_cfg, query_channels=channels,
                     memory_channels=channels, out_channels=channels,
                     **kwargs)))

    fusion = build_fusion()
    assert fusion.query_down.bias.shape == (256, )
    assert fusion.memory_down.bias.shape == (256, )
    # conv_layer_1..4 with biases, bn0 (256) and bn (2048)
    authors = (2 * (2048 * 256 + 256) + 2 * (256 * 2048 + 2048) +
               2 * 256 + 2 * 2048)
    count = sum(p.numel() for p in fusion.parameters())
    assert count == authors == 2_106_368
    plain = build_fusion(down_bias=False)
    assert sum(p.numel() for p in plain.parameters()) == count - 512


def test_freeze_mode_eval_keeps_frozen_modules_in_eval():
    _, model = build_paper_model(freeze_mode='eval')
    model.train()
    assert not model.backbone.training and not model.decode_head.training
    assert model.neck.training


def test_freeze_mode_is_checked():
    with pytest.raises(ValueError, match='freeze_mode'):
        build_paper_model(freeze_mode='frozen')
