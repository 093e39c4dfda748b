"""torch.compile and export of the per-frame step (the demo LMA-ERFNet)."""
import copy
import json
import os.path as osp
import re

import numpy as np
import pytest
import torch
from mmengine import Config
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from helpers import ROOT
from helpers.tools import run_tool, run_tool_in_process
from lma_mmseg.apis import init_model
from lma_mmseg.apis.export import (ExportedStreamer, example_memory, load_step,
                                   zero_memory)
from lma_mmseg.models import StreamMemory

CONFIG = osp.join(ROOT, 'configs/demo/lma-erfnet_demo.py')
# The compile tests check wiring (one graph, the op's fake and backward
# kernels under inductor), not capacity: the demo model with one encoder
# block per stage compiles in less time.
SMALL_ENCODER = dict(enc_stage_non_bottlenecks=(1, 1),
                     enc_non_bottleneck_dilations=(2, ))
H, W = 64, 128


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    model = init_model(
        CONFIG, device='cpu',
        cfg_options={f'model.backbone.{k}': v
                     for k, v in SMALL_ENCODER.items()})
    # non-trivial BN statistics
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


def eager_stream(model, frames):
    memory, out = None, []
    with torch.no_grad():
        for frame in frames:
            logits, memory = model.step(frame, memory)
            out.append(logits)
    return out


@pytest.mark.slow
def test_compiled_step_has_no_graph_break(model):
    frames = torch.randn(5, 1, 3, H, W)
    compiled = torch.compile(model.step, fullgraph=True)
    memory = model.empty_memory(frames[0])
    with torch.no_grad():
        for frame, expected in zip(frames, eager_stream(model, frames)):
            logits, memory = compiled(frame, memory)
            assert isinstance(memory, StreamMemory)
            torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


def _train_batch():
    inputs = torch.randn(2, 4, 3, H, W)
    samples = []
    for _ in range(2):
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 19, (1, H, W)))
        sample.set_metainfo(dict(img_shape=(H, W), ori_shape=(H, W)))
        samples.append(sample)
    return inputs, samples


def _grads(model):
    return {
        n: p.grad.clone()
        for n, p in model.named_parameters() if p.grad is not None
    }


@pytest.mark.slow
def test_compiled_training_iteration_has_no_graph_break():
    init_default_scope('mmseg')
    torch.manual_seed(0)
    cfg = Config.fromfile(CONFIG)
    cfg.model.backbone.update(SMALL_ENCODER)
    model = MODELS.build(cfg.model).train()
    # no random numbers: compiled dropout draws other ones than eager
    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.p = 0.0
    inputs, samples = _train_batch()
    # every call starts from the same BN statistics: train-mode calls update
    # them, and the memory frames are encoded with them
    # (memory_encoder_mode='eval')
    state = copy.deepcopy(model.state_dict())

    def loss_of(inputs, samples):
        losses = model.loss(inputs, samples)
        return sum(v for k, v in losses.items() if 'loss' in k)

    def network(inputs):
        return model.decode_head.forward(model.extract_feat(inputs))

    results = {}
    for name, fn, compile_kwargs in (
            # the whole training loss of mmseg, captured in one graph
            ('loss', loss_of, dict(backend='aot_eager')),
            # the network (memory, attention, fusion, decoder) with inductor
            ('network', network, dict())):
        for compiled in (False, True):
            model.load_state_dict(state)
            model.zero_grad()
            torch.manual_seed(1)
            call = torch.compile(fn, fullgraph=True, **compile_kwargs) \
                if compiled else fn
            args = (inputs, samples) if name == 'loss' else (inputs, )
            out = call(*args)
            (out if name == 'loss' else out.square().mean()).backward()
            results[name, compiled] = (out.detach(), _grads(model))
    # aot_eager runs the eager kernels: equal to rounding
    eager, compiled = results['loss', False], results['loss', True]
    torch.testing.assert_close(compiled[0], eager[0], atol=1e-5, rtol=0)
    assert eager[1].keys() == compiled[1].keys() and eager[1]
    for key in eager[1]:
        torch.testing.assert_close(
            compiled[1][key], eager[1][key], atol=1e-5, rtol=1e-3)
    # inductor computes the train-mode BN of the trained encoder its own
    # way: the output agrees to 1e-4, the gradients through the encoder's
    # batch statistics to about 1 % of their norm (measured 1.2 %; eager
    # float32 against float64: 0.12 %)
    eager, compiled = results['network', False], results['network', True]
    torch.testing.assert_close(compiled[0], eager[0], atol=1e-4, rtol=0)
    assert eager[1].keys() == compiled[1].keys() and eager[1]
    for key in eager[1]:
        error = (compiled[1][key] - eager[1][key]).norm()
        assert error <= 3e-2 * eager[1][key].norm() + 1e-4, key


@pytest.fixture(scope='module')
def exported(model, tmp_path_factory):
    """The model exported once by tools/deploy/export.py (program and
    AOTInductor package), shared by the tests below: the export runs in its
    own process, as users run it."""
    tmp = tmp_path_factory.mktemp('export')
    ckpt = tmp / 'lma.pth'
    torch.save(dict(state_dict=model.state_dict()), ckpt)
    out = tmp / 'export'
    proc = run_tool('deploy/export.py', CONFIG, ckpt, '--shape', H, W,
                    '--out', out, '--aoti', '--cfg-options', *[
                        f'model.backbone.{k}={v}'.replace(' ', '')
                        for k, v in SMALL_ENCODER.items()])
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the paths: the JSON object on the lines after mmengine's log
    start = re.search(r'^\{', proc.stdout, re.MULTILINE).start()
    return out, json.loads(proc.stdout[start:])


@pytest.mark.slow
def test_exported_step_equals_eager(model, exported):
    out, paths = exported
    assert sorted(paths) == [
        'aoti', 'info', 'memory_length', 'memory_offsets',
        'num_memory_tensors', 'program'
    ]
    assert (out / 'step.pt2').is_file() and (out / 'step.json').is_file()
    assert (out / 'step_aoti.pt2').is_file()
    info = json.loads(open(paths['info']).read())
    assert info['memory_length'] == model.memory_length == 3
    assert info['memory_offsets'] == paths['memory_offsets'] == [-3, -2, -1]
    assert info['input_shape'] == [1, 3, H, W]
    # keys, values (3 frames at 1/8) and the count of frames seen
    assert info['memory_shapes'] == [[1, 3, 16, 8, 16], [1, 3, 64, 8, 16],
                                     []]
    frames = torch.randn(6, 1, 3, H, W)
    expected = eager_stream(model, frames)
    # a stream from its first frame (an empty memory, as the eager step
    # starts): equal to the eager step on every frame
    memory, _ = example_memory(model, frames[0])
    assert [list(t.shape) for t in memory] == info['memory_shapes']
    for path, aoti in ((paths['program'], False), (paths['aoti'], True)):
        program = load_step(path, aoti=aoti)
        flat = list(memory)
        eager_memory = None
        with torch.no_grad():
            for t, frame in enumerate(frames):
                logits, *flat = program(frame, *flat)
                _, eager_memory = model.step(frame, eager_memory)
                torch.testing.assert_close(
                    logits, expected[t], atol=1e-4, rtol=0)
                torch.testing.assert_close(
                    flat[0], eager_memory.keys, atol=1e-4, rtol=0)
                assert int(flat[2]) == int(eager_memory.count) == \
                    min(t + 1, 3)
    # ExportedStreamer starts every stream from zeros (step.json's shapes)
    streamer = ExportedStreamer(load_step(paths['program']),
                                zero_memory(info))
    for _ in range(2):
        with torch.no_grad():
            got = [streamer(frame) for frame in frames]
        for t in range(len(frames)):
            torch.testing.assert_close(
                got[t], expected[t], atol=1e-4, rtol=0)
        streamer.reset()


@pytest.mark.slow
def test_stream_exported_tool(exported, tmp_path):
    out, _ = exported
    import cv2
    frames_dir = tmp_path / 'frames'
    frames_dir.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(
            str(frames_dir / f'f{i:03d}.png'),
            rng.integers(0, 256, (H * 2, W * 2, 3), dtype=np.uint8))
    preds = tmp_path / 'preds'
    proc = run_tool('deploy/stream_exported.py', out, frames_dir, '--out',
                    preds)
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in preds.iterdir())
    assert names == [f'f{i:03d}.png' for i in range(4)]
    label = cv2.imread(str(preds / 'f003.png'), cv2.IMREAD_UNCHANGED)
    assert label.shape == (H, W) and label.max() < 19
    # bad input names what is wrong (in this process: the check fails
    # before any work)
    proc = run_tool_in_process('deploy/stream_exported.py',
                               tmp_path / 'nowhere', frames_dir, '--out',
                               preds)
    assert proc.returncode == 2 and 'step.json' in proc.stderr
