"""The split ERFNet (ERFNetEncoder + ERFNetDecoderHead) is mmseg's ERFNet.

An mmseg ERFNet checkpoint, converted by
``tools/convert/mmseg_erfnet_to_split.py``, loads into the split model with
no missing or unexpected key and gives the same logits.
"""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules

import lma_mmseg  # noqa: F401  (registers the split ERFNet)
from helpers import ROOT
from helpers.tools import run_tool_in_process
from lma_mmseg.models.backbones import erfnet_convert as converter

register_all_modules(init_default_scope=True)

CONVERTER = 'convert/mmseg_erfnet_to_split.py'
SPLIT_CFG = osp.join(ROOT, 'configs', '_base_', 'models', 'erfnet-split.py')
NUM_CLASSES = 5


def _mmseg_erfnet_cfg(tmp_path):
    """mmseg's own ERFNet model config (BN instead of SyncBN for CPU)."""
    cfg_file = tmp_path / 'mmseg_erfnet.py'
    cfg_file.write_text(
        "_base_ = ['mmseg::erfnet/erfnet_fcn_4xb4-160k_cityscapes-512x1024"
        ".py']\n")
    cfg = Config.fromfile(str(cfg_file)).model
    cfg.decode_head.norm_cfg = dict(type='BN', requires_grad=True)
    cfg.decode_head.num_classes = NUM_CLASSES
    cfg.data_preprocessor.size = None
    return cfg


def _split_cfg():
    cfg = Config.fromfile(SPLIT_CFG).model
    cfg.decode_head.norm_cfg = dict(type='BN', requires_grad=True)
    cfg.decode_head.num_classes = NUM_CLASSES
    return cfg


def _randomise_bn(model):
    """Give BN layers non-trivial statistics so eval outputs depend on
    them."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(
                torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=gen))
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen))


@pytest.fixture(scope='module')
def mmseg_erfnet(tmp_path_factory):
    torch.manual_seed(0)
    model = MODELS.build(_mmseg_erfnet_cfg(tmp_path_factory.mktemp('cfg')))
    model.init_weights()
    _randomise_bn(model)
    return model.eval()


def test_encoder_shapes_and_channels():
    encoder = MODELS.build(dict(type='ERFNetEncoder'))
    x = torch.randn(2, 3, 64, 96)
    (feat, ) = encoder(x)
    assert feat.shape == (2, 128, 8, 12)
    assert encoder.out_channels == 128


def test_decoder_head_shapes():
    head = MODELS.build(
        dict(
            type='ERFNetDecoderHead',
            in_channels=128,
            channels=32,
            num_classes=NUM_CLASSES,
            in_index=0))
    logits = head((torch.randn(2, 128, 8, 12), ))
    # two upsamplers: 1/8 -> 1/2
    assert logits.shape == (2, NUM_CLASSES, 32, 48)


def test_converted_checkpoint_matches_mmseg_erfnet(mmseg_erfnet):
    src = mmseg_erfnet.state_dict()
    converted = converter.convert_state_dict(src)
    assert any(k.startswith('decode_head.decoder.') for k in converted)
    assert not any(k.startswith('backbone.decoder.') for k in converted)
    assert len(converted) == len(src)

    split = MODELS.build(_split_cfg())
    result = split.load_state_dict(converted, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    split.eval()

    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        ref = mmseg_erfnet._forward(x)
        out = split._forward(x)
    assert out.shape == ref.shape == (1, NUM_CLASSES, 32, 64)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_unconverted_checkpoint_is_refused(mmseg_erfnet, tmp_path):
    from mmengine.runner import load_checkpoint
    src = tmp_path / 'mmseg_erfnet.pth'
    torch.save(dict(state_dict=mmseg_erfnet.state_dict()), src)
    split = MODELS.build(_split_cfg())
    with pytest.raises(ValueError, match='mmseg_erfnet_to_split'):
        load_checkpoint(split, str(src), map_location='cpu', strict=False)


def test_split_state_dict_has_exactly_the_mmseg_parameters(mmseg_erfnet):
    split = MODELS.build(_split_cfg())
    split_keys = set(split.state_dict())
    mmseg_keys = {
        k.replace('backbone.decoder.', 'decode_head.decoder.')
        for k in mmseg_erfnet.state_dict()
    }
    assert split_keys == mmseg_keys


def test_converter_cli_writes_loadable_checkpoint(mmseg_erfnet, tmp_path):
    src = tmp_path / 'mmseg_erfnet.pth'
    torch.save(
        dict(
            state_dict=mmseg_erfnet.state_dict(),
            meta=dict(dataset_meta=dict(classes=list('abcde'))),
            optimizer=dict(state={}, param_groups=[])), src)
    dst = tmp_path / 'out' / 'split.pth'
    proc = run_tool_in_process(CONVERTER, src, dst)
    assert proc.returncode == 0, proc.stderr
    assert dst.exists()
    # nothing but the result is left in the output folder
    assert sorted(p.name for p in dst.parent.iterdir()) == ['split.pth']

    from mmengine.runner import load_checkpoint
    split = MODELS.build(_split_cfg())
    ckpt = load_checkpoint(split, str(dst), map_location='cpu', strict=True)
    assert set(ckpt) == {'state_dict', 'meta'}
    assert ckpt['meta']['dataset_meta']['classes'] == list('abcde')
    torch.testing.assert_close(
        split.decode_head.decoder[0].conv.weight,
        mmseg_erfnet.backbone.decoder[0].conv.weight)


def test_converter_rejects_wrong_inputs(mmseg_erfnet):
    src = mmseg_erfnet.state_dict()
    converted = converter.convert_state_dict(src)
    with pytest.raises(ValueError, match='already in the split layout'):
        converter.convert_state_dict(converted)
    bad = copy.copy(src)
    bad['neck.convs.0.weight'] = torch.zeros(1)
    with pytest.raises(ValueError, match='neck.convs.0.weight'):
        converter.convert_state_dict(bad, source='x.pth')
    with pytest.raises(ValueError, match='found 0 encoder'):
        converter.convert_state_dict(
            {k: v
             for k, v in src.items() if 'encoder' not in k})


def test_converter_reports_missing_file(tmp_path):
    proc = run_tool_in_process(CONVERTER, tmp_path / 'nope.pth',
                               tmp_path / 'o.pth')
    assert proc.returncode == 1
    assert 'nope.pth' in proc.stderr and 'Traceback' not in proc.stderr
    assert not (tmp_path / 'o.pth').exists()
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        converter.convert_checkpoint(
            str(tmp_path / 'nope.pth'), str(tmp_path / 'o.pth'))


def test_bad_arguments_and_shapes_are_named():
    with pytest.raises(ValueError, match='enc_stage_non_bottlenecks'):
        MODELS.build(
            dict(type='ERFNetEncoder', enc_stage_non_bottlenecks=(5, 7)))
    with pytest.raises(ValueError, match='dec_upsample_channels'):
        MODELS.build(
            dict(
                type='ERFNetDecoderHead',
                channels=8,
                num_classes=2,
                dec_upsample_channels=(32, 16)))
    encoder = MODELS.build(dict(type='ERFNetEncoder'))
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        encoder(torch.randn(1, 4, 32, 32))
    head = MODELS.build(
        dict(type='ERFNetDecoderHead', channels=8, num_classes=2,
             in_index=0))
    with pytest.raises(ValueError, match=r'\(B, 128, h, w\)'):
        head((torch.randn(1, 64, 4, 4), ))


def test_split_trains_one_step():
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    torch.manual_seed(0)
    model = MODELS.build(_split_cfg())
    model.init_weights()
    model.train()
    inputs = torch.randn(2, 3, 32, 64)
    samples = []
    for _ in range(2):
        s = SegDataSample()
        s.gt_sem_seg = PixelData(
            data=torch.randint(0, NUM_CLASSES, (1, 32, 64)))
        s.set_metainfo(dict(img_shape=(32, 64), ori_shape=(32, 64)))
        samples.append(s)
    losses = model.loss(inputs, samples)
    loss = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
    assert model.backbone.encoder[0].conv.weight.grad.abs().sum() > 0
    assert model.decode_head.decoder[0].conv.weight.grad.abs().sum() > 0
