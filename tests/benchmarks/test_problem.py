"""The problem dataclasses of lma_mmseg.benchmarks.problem: fields,
checks (errors name the field), inputs."""
import json

import pytest
import torch

from lma_mmseg.benchmarks.problem import (OP_SHAPES, QUICK_OP_SHAPES,
                                          ModelProblem, OpBenchmarkSettings,
                                          OpProblem, TimerSettings)


def test_op_shapes_are_the_papers_settings():
    erf, psp = OP_SHAPES['erfnet'], OP_SHAPES['pspnet']
    assert erf.shape == dict(B=1, C=16, Cv=64, T=3, H=64, W=128, window=21)
    assert psp.shape == dict(B=1, C=128, Cv=2048, T=3, H=64, W=128,
                             window=21)
    for p in (erf, psp):
        assert (p.dilation, p.scale, p.padding) == (1, 1.0, 'zeros')
        assert p.slots == 3 * 21 * 21
    assert set(QUICK_OP_SHAPES) == set(OP_SHAPES)


def test_op_problem_inputs():
    p = OpProblem(B=2, C=4, Cv=6, T=3, H=5, W=7, window=3, dtype='bfloat16')
    x = p.inputs(seed=1)
    assert x.q.shape == (2, 4, 5, 7) and x.k.shape == (2, 3, 4, 5, 7)
    assert x.v.shape == (2, 3, 6, 5, 7) and x.grad.shape == (2, 6, 5, 7)
    assert x.bias.shape == (3, 9)
    assert all(t.dtype == torch.bfloat16 for t in (x.q, x.k, x.v, x.grad))
    # the same seed gives the same inputs, another seed others
    torch.testing.assert_close(p.inputs(seed=1).k, x.k)
    assert not torch.equal(p.inputs(seed=2).k, x.k)
    # a cast keeps the values
    assert x.to(torch.float32).q.dtype == torch.float32
    torch.testing.assert_close(x.to(torch.float32).q, x.q.float())


@pytest.mark.parametrize('field,value', [
    ('B', 0), ('C', 1.5), ('T', True), ('window', 4), ('dilation', 0),
    ('scale', 0), ('padding', 'reflect'), ('dtype', 'int8'),
    ('device', 'tpu'), ('device', 'nonsense')
])
def test_op_problem_errors_name_the_field(field, value):
    fields = dict(B=1, C=2, Cv=3, T=1, H=4, W=4, window=3)
    fields[field] = value
    with pytest.raises(ValueError, match=f'`{field}`'):
        OpProblem(**fields)
    with pytest.raises(ValueError, match=f'`{field}`'):
        OpProblem(B=1, C=2, Cv=3, T=1, H=4, W=4, window=3).replace(
            **{field: value})


def test_op_benchmark_settings():
    s = OpBenchmarkSettings(devices=['cpu', 'cpu'], shapes=['erfnet'],
                            methods=['fused', 'sdpa'], quick=True)
    assert s.devices == ('cpu', ) and s.resolved_devices() == ('cpu', )
    auto = OpBenchmarkSettings(devices=['auto']).resolved_devices()
    assert auto == ('cpu', 'cuda') if torch.cuda.is_available() else (
        'cpu', )
    p = s.problem('erfnet', 'float16', 'cpu')
    assert p == QUICK_OP_SHAPES['erfnet'].replace(dtype='float16')
    assert OpBenchmarkSettings(padding='mask').problem(
        'pspnet', 'float32', 'cpu') == OP_SHAPES['pspnet'].replace(
            padding='mask')
    d = s.as_dict()
    assert d['methods'] == ['fused', 'sdpa']
    assert d['model_size'] == [512, 1024]
    json.dumps(d)


@pytest.mark.parametrize('field,value', [
    ('devices', ['tpu']), ('shapes', ['resnet']), ('methods', ['fast']),
    ('methods', []), ('dtypes', ['int8']), ('dtypes', 'float32'),
    ('repeats', 0), ('ref_repeats', 0), ('warmup', -1), ('max_ref_gb', 0),
    ('model_size', (32, )), ('padding', 'same')
])
def test_op_benchmark_settings_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=f'`{field}'):
        OpBenchmarkSettings(**{field: value})


def test_model_problem():
    p = ModelProblem('a.py', shape=[32, 64], modes=['streaming'],
                     dtype='bfloat16')
    assert p.shape == (32, 64) and p.modes == ('streaming', )
    assert p.autocast_dtype == torch.bfloat16
    assert ModelProblem('a.py').autocast_dtype is None
    assert (ModelProblem('a.py').frames, ModelProblem('a.py').warmup) == (
        200, 20)


@pytest.mark.parametrize('kwargs,field', [
    (dict(shape=(4, 64)), 'shape'), (dict(shape=(32, )), 'shape'),
    (dict(frames=0), 'frames'), (dict(warmup=-1), 'warmup'),
    (dict(modes=['fast']), 'modes'), (dict(dtype='int8'), 'dtype'),
    (dict(device='tpu'), 'device'),
    (dict(baseline_checkpoint='b.pth'), 'baseline_checkpoint')
])
def test_model_problem_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f'`{field}'):
        ModelProblem('a.py', **kwargs)


def test_timer_settings_errors():
    assert TimerSettings(repeats=3, warmup=0).repeats == 3
    with pytest.raises(ValueError, match='`repeats`'):
        TimerSettings(repeats=0)
    with pytest.raises(ValueError, match='`warmup`'):
        TimerSettings(warmup=-1)
