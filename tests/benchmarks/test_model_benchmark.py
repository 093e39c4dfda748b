"""The model benchmark (lma_mmseg.benchmarks.model_benchmark): configs,
frames, runners, FLOPs, describe_model and run_model_benchmark in
process."""
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmseg.registry import MODELS

import lma_mmseg  # noqa: F401
from helpers import ROOT
from lma_mmseg.apis import count_flops, init_model
from lma_mmseg.benchmarks import ModelProblem, run_model_benchmark
from lma_mmseg.benchmarks.model_benchmark import (ReencodeRunner,
                                                  SingleFrameRunner,
                                                  StreamingRunner,
                                                  count_params, describe_model,
                                                  load_config,
                                                  synthetic_frames)
from lma_mmseg.models import LocalMemoryNeck, is_memory_model

LMA = osp.join(ROOT, 'configs', '_base_', 'models', 'lma-erfnet.py')
ERFNET = osp.join(ROOT, 'configs', '_base_', 'models', 'erfnet-split.py')
MMSEG_ERFNET = 'mmseg::erfnet/erfnet_fcn_4xb4-160k_cityscapes-512x1024.py'
#: LMA-ERFNet and ERFNet cut down to one non-bottleneck block per stage and
#: a 1-frame memory with a 3x3 window: what torch.compile has to compile
SMALL_ERFNET = {
    'model.backbone.enc_stage_non_bottlenecks': (1, 1),
    'model.backbone.enc_non_bottleneck_dilations': (2, ),
    'model.decode_head.dec_stages_non_bottleneck': (1, 1),
}
SMALL_LMA = dict(
    SMALL_ERFNET, **{
        'model.neck.memory_length': 1,
        'model.neck.window': 3
    })


def test_synthetic_frames_pan():
    frames = synthetic_frames(3, (32, 64), seed=1)
    assert [f.shape for f in frames] == [(32, 64, 3)] * 3
    assert frames[0].dtype == np.uint8
    # frame i is the scene shifted by 4 px per frame
    np.testing.assert_array_equal(frames[1][:, :-4], frames[0][:, 4:])
    with pytest.raises(ValueError, match='`shape`'):
        synthetic_frames(1, (4, 64))


def test_load_config_through_mmengines_hub():
    cfg = load_config(MMSEG_ERFNET)
    assert cfg.model.backbone.type == 'ERFNet'
    assert cfg.filename.endswith(MMSEG_ERFNET.split('::')[1])
    with pytest.raises(FileNotFoundError, match="'mmseg::nope/x.py'"):
        load_config('mmseg::nope/x.py')
    with pytest.raises(FileNotFoundError, match="'nope.py'"):
        load_config('nope.py')
    assert load_config(LMA).model.neck.type == 'LocalMemoryNeck'


@MODELS.register_module(force=True)
class LongMemoryNeck(LocalMemoryNeck):
    """A neck whose defaults are not LocalMemoryNeck's."""

    def __init__(self, *args, memory_length: int = 5, window: int = 7,
                 **kwargs):
        super().__init__(
            *args, memory_length=memory_length, window=window, **kwargs)


def test_describe_model_uses_the_necks_defaults():
    cfg = Config.fromfile(LMA).model
    assert describe_model(cfg) == dict(
        segmentor='VideoEncoderDecoder', backbone='ERFNetEncoder',
        neck='LocalMemoryNeck', method='LMA', memory_length=3, window=21)
    # values the config leaves out come from the neck class
    cfg.neck.pop('memory_length')
    cfg.neck.pop('window')
    info = describe_model(cfg)
    assert (info['memory_length'], info['window']) == (3, 21)
    cfg.memory_offsets = (-8, -4)
    assert describe_model(cfg)['memory_length'] == 2
    cfg.pop('memory_offsets')
    cfg.neck.type = 'LongMemoryNeck'
    info = describe_model(cfg)
    assert (info['memory_length'], info['window']) == (5, 7)
    # a built model: the built neck's attributes
    model = MODELS.build(cfg)
    assert describe_model(model) == dict(info, neck='LongMemoryNeck')
    # a single-frame model, by config and built
    base = Config.fromfile(ERFNET).model
    single = dict(segmentor='EncoderDecoder', backbone='ERFNetEncoder',
                  neck=None, method='single-frame', memory_length=0,
                  window=None)
    assert describe_model(base) == single
    assert describe_model(MODELS.build(base)) == single
    with pytest.raises(TypeError, match='describe_model'):
        describe_model('lma-erfnet.py')


def test_count_flops_and_params_of_lma_erfnet():
    torch.set_num_threads(1)
    lma = init_model(Config.fromfile(LMA))
    base = init_model(Config.fromfile(ERFNET))
    assert is_memory_model(lma) and not is_memory_model(base)
    shape = (64, 128)
    single = count_flops(base, 'single', shape, 'cpu')
    stream = count_flops(lma, 'streaming', shape, 'cpu')
    reenc = count_flops(lma, 'reencode', shape, 'cpu')
    for res in (single, stream, reenc):
        assert res['error'] is None and res['flops'] > 0
    # T=3 frames x 21x21 window x (8x16 positions at 1/8) x (16 + 64) ch
    assert stream['attention_flops'] == 3 * 21 * 21 * 8 * 16 * (16 + 64)
    assert reenc['attention_flops'] == stream['attention_flops']
    assert single['attention_flops'] == 0
    # streaming adds the neck to the single-frame cost; re-encoding runs
    # the backbone on 4 frames
    assert single['flops'] < stream['flops'] < 1.2 * single['flops']
    assert reenc['flops'] > 2.5 * single['flops']
    assert count_params(lma) > count_params(base) == sum(
        p.numel() for p in base.parameters())
    assert count_flops(base, 'bogus', shape, 'cpu')['error']


@pytest.mark.parametrize('offsets', [None, (-4, -2)])
def test_streaming_and_reencode_runners_agree(offsets):
    """Both LMA modes time the same computation: equal results once the
    memory is full (frame max|offset| onwards), also with strided memory
    offsets."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = Config.fromfile(LMA)
    if offsets:
        cfg.model.memory_offsets = offsets
        cfg.model.neck.memory_length = len(offsets)
    lma = init_model(cfg)
    span = -lma.memory_offsets[0]
    frames = synthetic_frames(span + 3, (32, 64), seed=2)
    stream = StreamingRunner(lma)
    reenc = ReencodeRunner(lma, lma.memory_offsets)
    single = SingleFrameRunner(init_model(Config.fromfile(ERFNET)))
    for runner in (stream, reenc):
        runner.reset()
    for i, frame in enumerate(frames):
        a = stream.step(frame)[0]
        b = reenc.step(frame)[0]
        assert a.pred_sem_seg.shape == (32, 64)
        if i >= span:
            torch.testing.assert_close(
                a.seg_logits.data, b.seg_logits.data, rtol=1e-4, atol=1e-4)
    # the streaming runner's memory is the model's own step memory
    assert stream.seg.memory_size == span
    assert single.step(frames[0])[0].pred_sem_seg.shape == (32, 64)
    with pytest.raises(ValueError, match='memory_offsets'):
        ReencodeRunner(lma, (1, ))


def test_benchmark_mmseg_config_single_frame():
    res = run_model_benchmark(
        ModelProblem(MMSEG_ERFNET, shape=(32, 64), frames=2, warmup=0),
        threads=1, progress=False, flops=False)
    (r, ) = res['results']
    assert (r['role'], r['mode']) == ('model', 'single')
    assert len(r['times_ms']) == 2 and r['median_ms'] > 0
    assert r['gflops'] is None and res['baseline'] is None
    assert res['overhead'] == []
    assert res['model']['method'] == 'single-frame'
    assert res['model']['backbone'] == 'ERFNet'


def test_memory_model_baseline_streams_interleaved():
    """The same LMA model at other memory offsets as the baseline: both
    stream, timed in one run, frame by frame."""
    small = dict(SMALL_ERFNET)
    res = run_model_benchmark(
        ModelProblem(
            LMA,
            cfg_options=dict(small, **{'model.memory_offsets': (-6, -4,
                                                                -2)}),
            baseline=LMA,
            baseline_cfg_options=dict(
                small, **{'model.memory_offsets': (-3, -2, -1)}),
            shape=(32, 64),
            frames=3,
            warmup=1,
            modes=['streaming']),
        threads=1,
        progress=False,
        flops=False)
    got = {(r['role'], r['mode']): len(r['times_ms'])
           for r in res['results']}
    assert got == {('model', 'streaming'): 3, ('baseline', 'streaming'): 3}
    (overhead, ) = res['overhead']
    assert overhead['mode'] == 'streaming' and overhead['ratio'] > 0


def test_benchmark_argument_errors(tmp_path):
    small = dict(shape=(32, 64), frames=1)
    with pytest.raises(FileNotFoundError, match='nope.py'):
        run_model_benchmark(ModelProblem('nope.py'), progress=False)
    with pytest.raises(ValueError, match='needs a memory model'):
        run_model_benchmark(
            ModelProblem(ERFNET, modes=['reencode'], **small),
            progress=False)
    with pytest.raises(ValueError, match='need a `baseline`'):
        ModelProblem(ERFNET, baseline_cfg_options={'model.neck.window': 5})
    with pytest.raises(FileNotFoundError, match='no image'):
        run_model_benchmark(
            ModelProblem(ERFNET, frames_dir=str(tmp_path), **small),
            progress=False)
    with pytest.raises(ValueError, match='`threads`'):
        run_model_benchmark(ModelProblem(ERFNET, **small), threads=0)
    with pytest.raises(TypeError, match='ModelProblem'):
        run_model_benchmark(ERFNET)
    with pytest.raises(ValueError, match='`dtype`'):
        ModelProblem(ERFNET, dtype='int8')
    with pytest.raises(ValueError, match='`compile_backend`'):
        ModelProblem(ERFNET, compile=True, compile_backend='fast')


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_benchmark_on_cuda():
    res = run_model_benchmark(
        ModelProblem(LMA, baseline=ERFNET, device='cuda', shape=(64, 128),
                     frames=5, warmup=2),
        progress=False)
    assert res['device'].startswith('cuda')
    assert 'max_memory_allocated' in res['memory_measure']
    for r in res['results']:
        assert r['peak_memory_mb'] > 0 and r['gflops'] > 0
    assert [o['mode'] for o in res['overhead']] == ['streaming', 'reencode']


def test_benchmark_compiled_and_bfloat16(tmp_path):
    """``compile`` times compiled twins interleaved with eager; ``dtype``
    runs the networks under autocast (small LMA-ERFNet and ERFNet, traced
    by dynamo and AOTAutograd: inductor's kernels would take minutes to
    build on a CPU; tests/apis compiles the step with inductor)."""
    small_erfnet = str(tmp_path / 'erfnet-small.py')
    cfg = Config.fromfile(ERFNET)
    cfg.merge_from_dict(SMALL_ERFNET)
    cfg.dump(small_erfnet)
    res = run_model_benchmark(
        ModelProblem(
            LMA, cfg_options=SMALL_LMA, baseline=small_erfnet,
            shape=(32, 64),
            frames=1, warmup=1, modes=['streaming'], compile=True,
            compile_backend='aot_eager', dtype='bfloat16'),
        threads=1, progress=False, flops=False)
    assert res['dtype'] == 'bfloat16'
    assert res['compile_backend'] == 'aot_eager'
    assert res['model']['memory_length'] == 1 and res['model']['window'] == 3
    runs = [(r['role'], r['mode'], r['compiled']) for r in res['results']]
    assert runs == [('model', 'streaming', False),
                    ('model', 'streaming', True),
                    ('baseline', 'single', False),
                    ('baseline', 'single', True)]
    assert [(o['mode'], o['compiled']) for o in res['overhead']] == [
        ('streaming', False), ('streaming', True)]
    speedups = {(c['role'], c['mode']): c for c in res['compile_speedup']}
    assert set(speedups) == {('model', 'streaming'), ('baseline', 'single')}
    for c in speedups.values():
        assert c['speedup'] == round(c['eager_ms'] / c['compiled_ms'], 4)
    assert res['primary']['mode'] == 'streaming'
