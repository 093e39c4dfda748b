"""VideoEncoderDecoder: training on clips, freezing, inference modes,
checkpoints."""
import copy

import pytest
import torch
from mmengine import ConfigDict
from mmengine.runner import load_checkpoint, save_checkpoint
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import lma_mmseg  # noqa: F401  (registers the components)
from helpers.tiny_models import (NUM_CLASSES, tiny_backbone, tiny_head,
                                 tiny_neck)
from lma_mmseg.models import StreamMemory


def heads_cfg():
    return dict(
        decode_head=dict(tiny_head(), dropout_ratio=0.5),
        auxiliary_head=dict(
            type='FCNHead',
            in_channels=32,
            channels=8,
            in_index=0,
            num_convs=1,
            num_classes=NUM_CLASSES,
            loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4)))


def model_cfg(**kwargs):
    cfg = dict(
        type='VideoEncoderDecoder',
        backbone=tiny_backbone(),
        neck=tiny_neck(),
        test_cfg=dict(mode='whole'),
        **heads_cfg())
    cfg.update(kwargs)
    return cfg


def build(**kwargs):
    model = MODELS.build(model_cfg(**kwargs))
    model.test_cfg = ConfigDict(model.test_cfg)
    return model


def samples(batch, size=(48, 48)):
    out = []
    for _ in range(batch):
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, NUM_CLASSES, (1, *size)))
        sample.set_metainfo(dict(img_shape=size, ori_shape=size))
        out.append(sample)
    return out


def backbone_calls(model):
    seen = []
    handle = model.backbone.register_forward_hook(
        lambda m, args, out: seen.append(
            (args[0].shape[0], out[-1].requires_grad)))
    return seen, handle


def total_loss(losses):
    return sum(v for k, v in losses.items() if 'loss' in k)


def test_loss_full_finetuning():
    torch.manual_seed(0)
    model = build(freeze_memory_encoder=True).train()
    clip = torch.randn(2, 4, 3, 48, 48)
    seen, handle = backbone_calls(model)
    losses = model.loss(clip, samples(2))
    handle.remove()
    # memory frames in one batched call without gradient, key frame with
    assert seen == [(2 * 3, False), (2, True)]
    assert set(losses) >= {'decode.loss_ce', 'aux.loss_ce'}
    loss = total_loss(losses)
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
    assert torch.equal(model.neck.query_key.weight,
                       model.neck.memory_key.weight)  # no step taken yet


def test_loss_memory_encoder_with_gradient():
    torch.manual_seed(1)
    model = build(freeze_memory_encoder=False).train()
    seen, handle = backbone_calls(model)
    model.loss(torch.randn(1, 3, 3, 48, 48), samples(1))
    handle.remove()
    assert seen == [(2, True), (1, True)]


def test_frozen_backbone_and_decode_head():
    torch.manual_seed(2)
    model = build(freeze=('backbone', 'decode_head'))
    backbone_bns = [
        m for m in model.backbone.modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    ]
    model.train()
    assert model.neck.training and model.auxiliary_head.training
    assert not model.backbone.training and not model.decode_head.training
    assert all(not m.training for m in backbone_bns)
    frozen_state = {
        k: v.clone()
        for k, v in model.state_dict().items()
        if k.startswith(('backbone.', 'decode_head.'))
    }
    optim = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.1)
    seen, handle = backbone_calls(model)
    losses = model.loss(torch.randn(2, 4, 3, 48, 48), samples(2))
    handle.remove()
    assert seen == [(2 * 4, False)]  # all frames in one call
    loss = total_loss(losses)
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        frozen = name.startswith(('backbone.', 'decode_head.'))
        if frozen:
            assert p.grad is None and not p.requires_grad, name
        elif not name.startswith('auxiliary_head.'):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    optim.step()
    # BN statistics and weights of the frozen parts are unchanged
    for k, v in model.state_dict().items():
        if k in frozen_state:
            assert torch.equal(v, frozen_state[k]), k
    # dropout of the frozen decode head is off in train mode
    assert model.training and model.decode_head.dropout.p > 0
    feats = model.backbone(torch.ones(1, 3, 48, 48))
    assert feats[1].shape == (1, 64, 6, 6)
    assert torch.equal(model.decode_head(feats), model.decode_head(feats))


def test_predict_modes_and_single_frames():
    torch.manual_seed(3)
    model = build().eval()
    clip = torch.randn(2, 4, 3, 48, 64)
    with torch.no_grad():
        seen, handle = backbone_calls(model)
        whole = model.predict(clip)
        handle.remove()
        assert seen == [(2 * 4, False)]  # eval: one call for all frames
        assert whole[0].seg_logits.data.shape == (NUM_CLASSES, 48, 64)
        assert whole[0].pred_sem_seg.data.shape == (1, 48, 64)

        # slide: every window is cut from every frame of the clip
        model.test_cfg = ConfigDict(
            mode='slide', crop_size=(48, 48), stride=(32, 16))
        slide = model.predict(clip)[0].seg_logits.data
        model.test_cfg = ConfigDict(mode='whole')
        left = model.predict(clip[..., :48])[0].seg_logits.data
        right = model.predict(clip[..., 16:64])[0].seg_logits.data
        expected = torch.zeros(NUM_CLASSES, 48, 64)
        expected[..., :48] += left
        expected[..., 16:] += right
        expected[..., 16:48] /= 2
        torch.testing.assert_close(slide, expected, atol=1e-5, rtol=0)

        # a lone image: (B, 3, H, W) == (B, 1, 3, H, W), empty memory
        single = model.predict(clip[:, -1])[0].seg_logits.data
        single_clip = model.predict(clip[:, -1:])[0].seg_logits.data
        torch.testing.assert_close(single, single_clip)
        assert not torch.allclose(single, whole[0].seg_logits.data)

        out = model._forward(clip)
        assert out.shape == (2, NUM_CLASSES, 6, 8)
        assert model(clip, mode='tensor').shape == out.shape


@pytest.mark.parametrize('position_bias', [False, True])
def test_step_is_the_per_frame_clip_predict(position_bias):
    torch.manual_seed(5)
    model = build(neck=dict(
        model_cfg()['neck'], memory_length=2,
        position_bias=position_bias)).eval()
    if position_bias:
        with torch.no_grad():
            model.neck.position_bias.normal_(0, 1)
    frames = torch.randn(5, 2, 3, 48, 64)  # 5 steps, B=2 streams
    memory, calls = None, []
    handle = model.backbone.register_forward_hook(
        lambda m, args, out: calls.append(args[0].shape[0]))
    with torch.no_grad():
        for t in range(5):
            calls.clear()
            logits, memory = model.step(frames[t], memory)
            assert calls == [2]  # the step encodes the frame once
            assert isinstance(memory, StreamMemory)
            assert memory.num_frames == min(t + 1, 2)
            # one shape from the first frame on
            assert memory.keys.shape == (2, 2, 8, 6, 8)
            assert memory.values.shape == (2, 2, 16, 6, 8)
            first = max(0, t - 2)
            clip = frames[first:t + 1].transpose(0, 1)
            expected = model.encode_decode(clip, model._default_metas(clip))
            torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
        handle.remove()
        # other offsets on request: the memory keeps max(|offset|) frames
        _, longer = model.step(frames[0], memory_offsets=(-4, -1))
        assert longer.keys.shape == (2, 4, 8, 6, 8)
        assert longer.num_frames == 1
        with pytest.raises(ValueError, match=r'memory keys .*K>=4'):
            model.step(frames[1], memory, memory_offsets=(-4, -1))
        # slide: one memory per window, the segmentor's windows
        model.test_cfg = ConfigDict(
            mode='slide', crop_size=(48, 48), stride=(32, 16))
        memory = None
        for t in range(3):
            logits, memory = model.step(frames[t], memory)
        assert len(memory) == len(model.slide_windows((48, 64))) == 2
        clip = frames[:3].transpose(0, 1)
        expected = model.slide_inference(clip, model._default_metas(clip))
        torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
        with pytest.raises(ValueError, match='one memory per window'):
            model.step(frames[0], memory[:1])
        with pytest.raises(ValueError, match='one frame per stream'):
            model.step(frames[:2])
        with pytest.raises(ValueError, match='memory_offsets'):
            model.step(frames[0], memory_offsets=(0, ))
        with pytest.raises(ValueError, match='oldest first'):
            model.step(frames[0], memory_offsets=(-1, -2))


def test_predict_with_data_samples_flip_and_padding():
    torch.manual_seed(4)
    model = build().eval()
    clip = torch.randn(1, 2, 3, 48, 48)
    sample = SegDataSample()
    sample.set_metainfo(
        dict(
            ori_shape=(40, 44),
            img_shape=(40, 44),
            pad_shape=(48, 48),
            padding_size=[0, 4, 0, 8],
            flip=True,
            flip_direction='horizontal'))
    with torch.no_grad():
        result = model.predict(clip, [sample])[0]
        plain = model.predict(clip)[0].seg_logits.data
    assert result.seg_logits.data.shape == (NUM_CLASSES, 40, 44)
    torch.testing.assert_close(result.seg_logits.data,
                               plain[:, :40, :44].flip(-1))


def test_flop_counting():
    from mmengine.analysis import get_model_complexity_info
    model = build().eval()
    clip = torch.randn(1, 4, 3, 48, 48)
    info = get_model_complexity_info(model, inputs=(clip, ), show_table=False,
                                     show_arch=False)
    single = get_model_complexity_info(
        model, inputs=(clip[:, -1], ), show_table=False, show_arch=False)
    assert info['params'] == single['params'] > 0
    assert info['flops'] > single['flops'] > 0


def test_checkpoint_round_trip_and_single_frame_load(tmp_path):
    torch.manual_seed(5)
    model = build().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = str(tmp_path / 'lma.pth')
    save_checkpoint(dict(state_dict=model.state_dict()), path)
    other = build().eval()
    load_checkpoint(other, path, strict=True)
    clip = torch.randn(1, 3, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(other._forward(clip), model._forward(clip))

    # load_from a single-frame model with the same backbone and heads
    single_cfg = dict(
        type='EncoderDecoder', backbone=tiny_backbone(), **heads_cfg())
    single = MODELS.build(single_cfg)
    with torch.no_grad():
        for p in single.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    single_path = str(tmp_path / 'single.pth')
    save_checkpoint(dict(state_dict=single.state_dict()), single_path)
    lma = build()
    neck_before = copy.deepcopy(lma.neck.state_dict())
    load_checkpoint(lma, single_path, strict=False)
    for k, v in single.state_dict().items():
        assert torch.equal(lma.state_dict()[k], v), k
    for k, v in lma.neck.state_dict().items():
        assert torch.equal(v, neck_before[k]), k
    assert torch.equal(lma.neck.query_key.weight, lma.neck.memory_key.weight)
    missing = set(lma.state_dict()) - set(single.state_dict())
    assert missing and all(k.startswith('neck.') for k in missing)


def test_bad_configs_and_inputs():
    with pytest.raises(ValueError, match='neck'):
        build(neck=None)
    with pytest.raises(ValueError, match="unknown submodule 'encoder'"):
        build(freeze=('backbone', 'encoder'))
    with pytest.raises(ValueError, match='encode_memory'):
        build(neck=dict(
            type='MultiLevelNeck', in_channels=[32, 64], out_channels=64))
    model = build().eval()
    with pytest.raises(ValueError, match=r'\(B, T\+1, C, H, W\)'):
        model.predict(torch.randn(3, 48, 48))


def test_train_freeze_mode_encodes_memory_frame_by_frame():
    """freeze_mode='train': the frozen backbone runs in train mode, once per
    frame time, so BN batch statistics are those of one frame (as the
    authors' code); the memory is the same as encoding each frame alone."""
    torch.manual_seed(8)
    model = build(freeze=('backbone', ), freeze_mode='train').train()
    assert model.backbone.training
    clip = torch.randn(2, 4, 3, 48, 48)
    seen, handle = backbone_calls(model)
    model.loss(clip, samples(2))
    handle.remove()
    assert [n for n, _ in seen] == [2, 2, 2, 2]
    with torch.no_grad():
        memory = model.encode_memory(clip[:, :3])
        for t in range(3):
            keys, values = model.neck.encode_memory(
                model.backbone(clip[:, t]))
            torch.testing.assert_close(memory.keys[:, t], keys)
            torch.testing.assert_close(memory.values[:, t], values)


def _bn_means(module):
    return [
        m.running_mean.clone() for m in module.modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    ]


def test_memory_encoder_mode_eval_encodes_memory_as_inference():
    """memory_encoder_mode='eval': with the backbone training, the memory
    frames are encoded in eval mode (the features streaming inference
    reads), only the key frames update the BN running statistics, and the
    backbone is back in train mode afterwards; with 'follow' (the default)
    the memory frames update them too."""
    clip = torch.randn(2, 4, 3, 48, 48)
    torch.manual_seed(9)
    model = build(memory_encoder_mode='eval').train()
    start = copy.deepcopy(model)
    seen, handle = backbone_calls(model)
    model.loss(clip, samples(2))
    handle.remove()
    assert seen == [(2 * 3, False), (2, True)]
    assert all(m.training for m in model.backbone.modules())
    # running statistics: one update, with the key frames only
    key_only = copy.deepcopy(start)
    with torch.no_grad():
        key_only.backbone(clip[:, -1])
    for got, want in zip(_bn_means(model.backbone),
                         _bn_means(key_only.backbone)):
        torch.testing.assert_close(got, want)
    # the memory is what the eval-mode backbone gives
    with torch.no_grad():
        memory = start.encode_memory(clip[:, :3])
        start.eval()
        keys, values = start.neck.encode_memory(
            start.backbone(clip[:, :3].flatten(0, 1)))
    torch.testing.assert_close(memory.keys.flatten(0, 1), keys)
    torch.testing.assert_close(memory.values.flatten(0, 1), values)

    torch.manual_seed(9)
    follow = build().train()
    follow.loss(clip, samples(2))
    assert any(
        not torch.allclose(a, b)
        for a, b in zip(_bn_means(follow.backbone), _bn_means(model.backbone)))
    with pytest.raises(ValueError, match='memory_encoder_mode'):
        build(memory_encoder_mode='train')


def test_backbone_norm_eval_keeps_the_running_statistics():
    """backbone_norm_eval=True: in training the backbone's BN layers stay
    in eval mode (the running statistics the model starts from normalise
    key and memory frames and are not updated) while their weights, and the
    rest of the backbone, still get gradients; eval() and train() keep it
    so, and the memory is encoded with the same statistics."""
    clip = torch.randn(2, 4, 3, 48, 48)
    torch.manual_seed(9)
    model = build(memory_encoder_mode='eval', backbone_norm_eval=True)
    for m in model.backbone.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.eval().train()
    bns = [
        m for m in model.backbone.modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    ]
    assert bns and not any(m.training for m in bns)
    assert model.backbone.training and model.neck.training
    start = _bn_means(model.backbone)
    total_loss(model.loss(clip, samples(2))).backward()
    for got, want in zip(_bn_means(model.backbone), start):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0
               for m in bns)
    assert not any(m.training for m in bns)
    # the key frame's features: those of the eval-mode backbone (no
    # dropout in the test backbone), so training sees what inference sees
    model.eval()
    with torch.no_grad():
        eval_feats = model.backbone(clip[:, -1])
    model.train()
    with torch.no_grad():
        train_feats = model.backbone(clip[:, -1])
    for a, b in zip(train_feats, eval_feats):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match='backbone_norm_eval'):
        build(backbone_norm_eval='yes')


def _randomise_running_stats(module, seed):
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape,
                                            generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape,
                                           generator=gen) + 0.5)


def test_memory_norm_stats_start_keeps_the_checkpoints_for_the_memory(
        tmp_path):
    """memory_norm_stats='start': the memory frames are normalised with the
    BN statistics of the checkpoint the model was loaded from (a
    single-frame checkpoint without them fills them in; without a
    checkpoint, the backbone's when training starts), which training does
    not update, while the key frame's statistics follow the training data;
    the streamed step equals the clip mode and exports, and the statistics
    survive a checkpoint round trip."""
    torch.manual_seed(3)
    single = MODELS.build(
        dict(type='EncoderDecoder', backbone=tiny_backbone(),
             **heads_cfg()))
    _randomise_running_stats(single, 0)
    path = str(tmp_path / 'single.pth')
    save_checkpoint(single.state_dict(), path)
    start = {
        k: v.clone()
        for k, v in single.state_dict().items() if 'running' in k
    }

    model = build(memory_norm_stats='start', memory_encoder_mode='eval')
    assert not model.memory_norm.ready
    load_checkpoint(model, path, map_location='cpu', strict=False)
    assert bool(model.memory_norm.loaded)
    memory_stats = model.memory_norm.stats()
    assert memory_stats and all(
        torch.equal(v, start[f'backbone.{k}'])
        for k, v in memory_stats.items())

    # training: the key frame's statistics move, the memory's do not
    model.train()
    clip = torch.randn(2, 4, 3, 48, 48) * 3 + 1
    total_loss(model.loss(clip, samples(2))).backward()
    running = {k: v for k, v in model.state_dict().items()
               if k.startswith('backbone.') and 'running_mean' in k}
    assert any(not torch.equal(v, start[k]) for k, v in running.items())
    for k, v in model.memory_norm.stats().items():
        torch.testing.assert_close(v, start[f'backbone.{k}'], rtol=0, atol=0)

    # inference: the memory frames are those of a backbone with the
    # starting statistics, the key frame that of the trained one
    model.eval()
    plain = copy.deepcopy(model.backbone)
    plain.load_state_dict(
        {f'{k}': v for k, v in model.memory_norm.stats().items()},
        strict=False)
    with torch.no_grad():
        keys, values = model.encode_memory(clip[:1, :-1])
        want_keys, want_values = model.neck.encode_memory(
            plain(clip[0, :-1]))
    torch.testing.assert_close(keys[0], want_keys)
    torch.testing.assert_close(values[0], want_values)
    with torch.no_grad():
        other_keys, _ = model.neck.encode_memory(
            model.backbone(clip[0, :-1]))
    assert not torch.allclose(keys[0], other_keys)

    # streaming encodes each frame for the memory with the memory's
    # statistics: frame t's logits equal the clip mode's
    with torch.no_grad():
        memory = None
        for t in range(clip.shape[1]):
            logits, memory = model.step(clip[:1, t], memory)
        want = model.encode_decode(clip[:1], model._default_metas(clip[:1]))
    torch.testing.assert_close(logits, want, rtol=1e-4, atol=1e-4)
    # the step with the second backbone pass exports (one program)
    frame, empty = clip[:1, 0], model.empty_memory(clip[:1, 0])

    class Step(torch.nn.Module):

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, frame, keys, values, count):
            out, mem = self.model.step(frame,
                                       StreamMemory(keys, values, count))
            return (out, ) + tuple(mem)

    program = torch.export.export(Step(), (frame, *empty))
    with torch.no_grad():
        for got, want in zip(program.module()(frame, *empty),
                             Step()(frame, *empty)):
            torch.testing.assert_close(got, want)

    # mmengine's FLOP counter (torch.jit.trace) counts the second pass
    from lma_mmseg.apis.complexity import count_flops
    flops = count_flops(model, 'streaming', (48, 48))
    assert flops['error'] is None
    shared = copy.deepcopy(model)
    shared.memory_norm_stats = 'shared'
    single_pass = count_flops(shared, 'streaming', (48, 48))['flops']
    backbone = count_flops(single.eval(), 'single', (48, 48))[
        'flops_by_module']['backbone']
    assert flops['flops'] == single_pass + backbone
    # the statistics are the model's own again after the count
    for k, v in model.memory_norm.stats().items():
        torch.testing.assert_close(v, start[f'backbone.{k}'], rtol=0, atol=0)
    assert not any(
        model.backbone.get_buffer(k) is v
        for k, v in model.memory_norm.stats().items())

    # a checkpoint of the LMA model keeps its memory statistics
    path = str(tmp_path / 'lma.pth')
    save_checkpoint(model.state_dict(), path)
    other = build(memory_norm_stats='start', memory_encoder_mode='eval')
    load_checkpoint(other, path, map_location='cpu', strict=True)
    for k, v in other.memory_norm.stats().items():
        torch.testing.assert_close(v, start[f'backbone.{k}'], rtol=0, atol=0)

    # without a checkpoint: the backbone's statistics when training starts
    fresh = build(memory_norm_stats='start', memory_encoder_mode='eval')
    _randomise_running_stats(fresh.backbone, 1)
    now = {k: v.clone() for k, v in fresh.backbone.state_dict().items()
           if 'running' in k}
    fresh.train()
    assert fresh.memory_norm.ready and bool(fresh.memory_norm.loaded)
    for k, v in fresh.memory_norm.stats().items():
        torch.testing.assert_close(v, now[k], rtol=0, atol=0)
    total_loss(fresh.loss(clip, samples(2))).backward()
    fresh.eval().train()  # set once: later train() calls keep them
    for k, v in fresh.memory_norm.stats().items():
        torch.testing.assert_close(v, now[k], rtol=0, atol=0)

    with pytest.raises(ValueError, match='memory_norm_stats'):
        build(memory_norm_stats='frozen')
    with pytest.raises(ValueError, match='backbone_norm_eval'):
        build(memory_norm_stats='start', backbone_norm_eval=True)


def memory_head(**kwargs):
    return dict(
        dict(
            type='FCNHead',
            channels=8,
            num_convs=1,
            concat_input=False,
            loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4)),
        **kwargs)


def test_memory_head_trains_the_memory_through_the_readout():
    torch.manual_seed(0)
    neck = tiny_neck(residual=True)
    model = build(neck=neck, memory_head=memory_head()).train()
    # the neck's value width and the decode head's classes, filled in
    assert model.memory_head.in_channels == 16
    assert model.memory_head.num_classes == NUM_CLASSES
    clip = torch.randn(2, 4, 3, 48, 48)
    data = samples(2)
    losses = model.loss(clip, data)
    assert set(losses) >= {'decode.loss_ce', 'aux.loss_ce', 'mem.loss_ce',
                           'mem.acc_seg'}
    # the head's loss on the read-out alone
    torch.manual_seed(1)
    with torch.no_grad():
        _, readout = model._extract(clip, return_readout=True)
    torch.manual_seed(1)
    expected = model.memory_head.loss([readout], data, model.train_cfg)
    torch.testing.assert_close(losses['mem.loss_ce'], expected['loss_ce'])
    # with the residual fusion at its start (scale 0) the decode loss does
    # not reach the memory heads; the memory head's loss does
    model.zero_grad()
    total_loss({k: v for k, v in losses.items() if not k.startswith('mem')
                }).backward(retain_graph=True)
    assert model.neck.memory_value.weight.grad.abs().max() == 0
    model.zero_grad()
    losses['mem.loss_ce'].backward()
    for head in ('memory_key', 'query_key', 'memory_value'):
        assert getattr(model.neck, head).weight.grad.abs().max() > 0, head
    assert model.neck.query_value.weight.grad is None or \
        model.neck.query_value.weight.grad.abs().max() == 0
    # a lone frame has no read-out and no memory-head loss
    losses = model.loss(torch.randn(2, 3, 48, 48), samples(2))
    assert 'decode.loss_ce' in losses and 'mem.loss_ce' not in losses


def test_memory_head_takes_no_part_in_inference():
    torch.manual_seed(0)
    with_head = build(memory_head=memory_head()).eval()
    without = build().eval()
    state = {k: v for k, v in with_head.state_dict().items()
             if not k.startswith('memory_head.')}
    without.load_state_dict(state)
    clip = torch.randn(1, 4, 3, 48, 48)
    with torch.no_grad():
        a = with_head.predict(clip)[0].seg_logits.data
        b = without.predict(clip)[0].seg_logits.data
        torch.testing.assert_close(a, b)
        frame = clip[:, -1]
        torch.testing.assert_close(with_head.step(frame)[0],
                                   without.step(frame)[0])
    # a checkpoint without the head (e.g. the single-frame model's or a
    # model trained without it) loads, the head keeping its init
    missing = with_head.load_state_dict(state, strict=False).missing_keys
    assert missing and all(k.startswith('memory_head.') for k in missing)


def test_memory_head_bad_config():
    with pytest.raises(ValueError, match='memory_head.*type'):
        build(memory_head=dict(channels=8))
    with pytest.raises(ValueError, match='memory_head.*type'):
        build(memory_head='FCNHead')
    from lma_mmseg.models.necks import LocalMemoryNeck

    @MODELS.register_module(force=True)
    class ReadoutlessNeck(LocalMemoryNeck):
        """A memory neck whose forward cannot return the read-out."""

        def forward(self, inputs, memory=None, valid=None):
            return super().forward(inputs, memory, valid)

    try:
        # the neck alone works; with a memory head the model names it
        build(neck=tiny_neck(type='ReadoutlessNeck'))
        with pytest.raises(ValueError,
                           match='ReadoutlessNeck.*return_readout'):
            build(neck=tiny_neck(type='ReadoutlessNeck'),
                  memory_head=memory_head())
    finally:
        MODELS.module_dict.pop('ReadoutlessNeck')
