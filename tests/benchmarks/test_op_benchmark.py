"""The op benchmark (lma_mmseg.benchmarks.op_benchmark) on tiny shapes:
records, checks against the op, skips, ratios, tables."""
import pytest
import torch

from lma_mmseg.benchmarks.op_benchmark import (OP_ITSELF, TOLERANCES,
                                               check_against_op, make_method,
                                               op_output, reference_bytes,
                                               run_op_benchmark)
from lma_mmseg.benchmarks.problem import (OP_SHAPES, OpBenchmarkSettings,
                                          OpProblem)
from lma_mmseg.benchmarks.report import op_table, peer_table

METHODS = ['fused', 'unfused', 'reference', 'plain', 'sdpa', 'fused_bias']


def test_quick_benchmark_results_and_ratios():
    lines = []
    result = run_op_benchmark(
        OpBenchmarkSettings(
            devices=['cpu'],
            methods=METHODS,
            repeats=1,
            ref_repeats=1,
            model_size=(32, 64),
            quick=True),
        log=lines.append)
    methods = {(r['shape'], r['method']) for r in result['results']}
    assert methods == {(s, m) for s in ('erfnet', 'pspnet') for m in METHODS}
    for r in result['results']:
        assert r['dtype'] == 'float32' and r['device'] == 'cpu'
        assert r['padding'] == 'zeros' and 'note' not in r, r
        for phase in ('forward', 'forward_backward'):
            assert r[phase]['median_s'] > 0
            assert len(r[phase]['times_s']) == 1
            assert r[phase]['peak_bytes'] >= 0
        # every method but the op is checked against the op first
        if r['method'] in OP_ITSELF:
            assert 'check' not in r
        else:
            check = r['check']
            assert check['against'] == 'fused'
            assert check['tolerance'] == TOLERANCES['float32']
            assert check['forward_error'] < 1e-5
            assert check['backward_error'] < 1e-5
            assert r['forward']['paired_over_fused'] > 0
    assert result['erfnet_model']['cpu']['size'] == [32, 64]
    assert result['erfnet_model']['cpu']['median_s'] > 0
    ratios = result['ratios']
    for name in ('fused_forward_over_erfnet_forward',
                 'fused_forward_over_erfnet_forward_cpu',
                 'fused_forward_over_erfnet_forward_interleaved',
                 'unfused_over_fused_forward_time',
                 'reference_over_fused_forward_backward_time',
                 'plain_over_fused_forward_backward_time',
                 'sdpa_over_fused_forward_time_paired',
                 'fused_bias_over_fused_forward_time'):
        for shape in ('erfnet', 'pspnet'):
            assert ratios[f'cpu/{shape}/float32/{name}'] > 0, name
    env = result['environment']
    assert env['cpu_isa'] in ('avx2', 'baseline') and env['threads'] >= 1
    assert 'VmHWM' in result['memory_method']['cpu'] or \
        'ru_maxrss' in result['memory_method']['cpu']
    assert set(result['methods']) == set(METHODS)
    assert result['settings']['devices'] == ['cpu']
    # progress: the header, one line per record, one per ERFNet run
    assert len(lines) == 1 + 12 + 1
    assert any('ERFNet forward 32x64' in line for line in lines)
    assert any('fused forward =' in line for line in result['summary'])
    table = op_table(result['results'])
    assert 'fwd+bwd ms' in table and 'plain' in table and 'check' in table
    peers = peer_table(result['results'])
    assert 'fwd / fused' in peers and 'sdpa' in peers


def test_half_dtypes_on_cpu_are_checked_against_the_op_in_float32():
    result = run_op_benchmark(
        OpBenchmarkSettings(
            devices=['cpu'],
            shapes=['erfnet'],
            methods=['fused', 'unfused', 'plain', 'sdpa'],
            dtypes=['bfloat16'],
            repeats=1,
            model=False,
            quick=True),
        log=lambda line: None)
    by = {r['method']: r for r in result['results']}
    assert by['fused']['note'] == by['unfused']['note'] == \
        'skipped: the CPU kernels have no bfloat16'
    assert 'forward' not in by['fused']
    for name in ('plain', 'sdpa'):  # plain PyTorch runs in bfloat16
        r = by[name]
        assert 'note' not in r and r['forward']['median_s'] > 0
        assert r['check']['against'] == 'fused (float32)'
        assert r['check']['tolerance'] == TOLERANCES['bfloat16']
        assert 0 < r['check']['forward_error'] <= TOLERANCES['bfloat16']
        # without a fused record there is no ratio to it
        assert r['forward']['paired_over_fused'] is None
    assert peer_table(result['results']) == ''


def test_reference_and_dense_mask_are_skipped_above_the_memory_limit():
    lines = []
    result = run_op_benchmark(
        OpBenchmarkSettings(
            devices=['cpu'],
            shapes=['pspnet'],
            methods=['fused', 'reference', 'sdpa'],
            model=False,
            repeats=1,
            max_ref_gb=1e-6,
            quick=True),
        log=lines.append)
    by = {r['method']: r for r in result['results']}
    for name in ('reference', 'sdpa'):
        rec = by[name]
        assert rec['note'].startswith('skipped: needs ~')
        assert 'forward' not in rec and rec['estimated_bytes'] > 0
    assert 'forward' in by['fused']
    assert sum('skipped: needs' in line for line in lines) == 2


def test_reference_memory_estimate_at_the_paper_shapes():
    erf = reference_bytes(OP_SHAPES['erfnet'], backward=False)
    psp = reference_bytes(OP_SHAPES['pspnet'], backward=False)
    assert 5 * 2**30 < erf < 20 * 2**30  # measured: about 9 GB
    assert psp > 100 * 2**30  # far beyond any CPU machine here


def test_a_peer_that_disagrees_fails_its_check():
    """The zeros-padding op against a peer run with the mask padding: they
    differ at the border, so the peer is reported failed and not timed."""
    problem = OpProblem(B=1, C=4, Cv=6, T=2, H=6, W=7, window=5)
    x = problem.inputs()
    target = op_output(problem, x, max_ref_gb=1.0)
    assert target['against'] == 'fused'
    good, bad = dict(), dict()
    assert check_against_op(make_method('sdpa', problem), x, target, 1e-3,
                            good) == (True, True)
    assert 'note' not in good and good['check']['backward_error'] < 1e-5
    wrong = make_method('sdpa', problem.replace(padding='mask'))
    assert check_against_op(wrong, x, target, 1e-3, bad) == (False, False)
    assert bad['note'].startswith('failed: forward differs from the op by')
    assert bad['check']['forward_error'] > 1e-3
    with pytest.raises(ValueError, match='method'):
        make_method('fast', problem)


def test_bad_settings_and_devices():
    with pytest.raises(TypeError, match='OpBenchmarkSettings'):
        run_op_benchmark(dict(devices=['cpu']))
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match='no CUDA device'):
            run_op_benchmark(OpBenchmarkSettings(devices=['cuda']))
