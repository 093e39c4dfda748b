"""tools/analysis/temporal_suite.py and lma_mmseg.benchmarks.temporal_suite:
the variants build the models they describe, the runs get the stated
budgets, the suite runs end to end on tiny data (in this process, resumed,
and again with another tuning seed), and an isolated run trains the same
model as one in this process."""
import contextlib
import importlib.util
import io
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger, print_log
from mmseg.registry import MODELS

from helpers import ROOT
from lma_mmseg.benchmarks import temporal_suite as TS

BASE_CONFIG = osp.join(ROOT, 'configs', 'demo', 'erfnet_demo.py')
LMA_CONFIG = osp.join(ROOT, 'configs', 'demo', 'lma-erfnet_demo-light.py')
# the smallest suite: 32x64 frames, 3 train and 2 val snippets per mode, 3
# single-frame iterations, 2 fine-tuning iterations, data loaded in the
# training process
TINY = ['--iters', '3', '2', '--size', '32', '64', '--num-train', '3',
        '--num-val', '2', '--workers', '0']


def _tool():
    """The command line, loaded in this process."""
    spec = importlib.util.spec_from_file_location(
        'temporal_suite_tool',
        osp.join(ROOT, 'tools', 'analysis', 'temporal_suite.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def tool():
    return _tool()


def _read(path, mode='r'):
    with open(path, mode) as f:
        return f.read()


@pytest.fixture(scope='module')
def suite_run(tmp_path_factory, tool):
    """A tiny suite run through the command line: 2 modes, 2 variants, 2
    timed frames; its outputs as written (later tests add runs to the same
    work dir)."""
    work = str(tmp_path_factory.mktemp('suite') / 'suite')
    argv = ['--work-dir', work, '--modes', 'noise', 'dropout', '--variants',
            'light', 'residual', '--bench-frames', '2', '--bench-warmup',
            '1'] + TINY
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        tool.main(argv)
    return dict(
        work=work,
        argv=argv,
        stdout=out.getvalue(),
        json=json.loads(_read(osp.join(work, 'suite.json'))),
        md=_read(osp.join(work, 'suite.md')),
        png=_read(osp.join(work, 'suite.png'), 'rb'))


@pytest.mark.parametrize('variant', list(TS.VARIANTS))
def test_variants_build_what_they_say(variant):
    if not TS.available(variant):
        pytest.skip(f'{variant}: this neck lacks '
                    f'{TS.VARIANTS[variant]["needs"]}')
    cfg = TS.build_config(
        LMA_CONFIG, 'data/x', (32, 64), 10, load_from='ckpt.pth',
        options=TS.VARIANTS[variant]['options'])
    model = MODELS.build(cfg.model)
    neck = model.neck
    opts = TS.VARIANTS[variant]['options']
    assert neck.window == opts.get('model.neck.window', 7)
    assert neck.residual == opts.get('model.neck.residual', False)
    gates = neck.fusion.gates.out_channels // 2
    proj = neck.fusion.query_proj if hasattr(
        neck.fusion, 'query_proj') else None
    if 'model.neck.fusion.gate_channels' in opts:
        assert gates == 128
    else:
        assert gates == 1
    if proj is not None:
        paper = 'model.neck.fusion.proj_kernel_size' in opts
        assert proj.kernel_size == ((3, 3) if paper else (1, 1))
        assert (proj.bias is not None) == paper
    custom_keys = opts.get('optim_wrapper.paramwise_cfg',
                           {}).get('custom_keys', {})
    for key, value in custom_keys.items():
        assert cfg.optim_wrapper.paramwise_cfg.custom_keys[
            key].lr_mult == value['lr_mult']
    names = [n for n, _ in model.named_parameters()]
    assert any(TS.PRIOR_KEY in n for n in names) == bool(
        opts.get('model.neck.position_bias'))
    assert (TS.PRIOR_KEY in custom_keys) == bool(
        opts.get('model.neck.position_bias'))
    # the encoder trains only where the variant says so, and memory frames
    # are encoded in the mode it names
    trains_encoder = 'model.freeze' in opts
    assert all(p.requires_grad for p in model.backbone.parameters()) \
        == trains_encoder
    assert model.memory_encoder_mode == opts.get('model.memory_encoder_mode',
                                                 'follow')
    # the memory's own BN statistics where the variant says so
    assert model.memory_norm_stats == opts.get('model.memory_norm_stats',
                                               'shared')
    assert hasattr(model, 'memory_norm') == (
        model.memory_norm_stats == 'start')
    # the model and every split read the memory frames at the variant's
    # offsets, one position-bias row each
    offsets = opts.get('model.memory_offsets', (-3, -2, -1))
    assert tuple(model.memory_offsets) == tuple(offsets)
    assert neck.memory_length == len(offsets)
    for split in ('train', 'val', 'test'):
        assert tuple(cfg[f'{split}_dataloader'].dataset.frame_offsets) == \
            tuple(offsets)
    # a learning-rate multiplier names a parameter the model has
    if TS.RESIDUAL_KEY in custom_keys:
        assert TS.RESIDUAL_KEY in names and neck.residual
    assert neck.key_gate == opts.get('model.neck.key_gate', False)
    assert (TS.KEY_GATE_KEY in custom_keys) == neck.key_gate
    if neck.key_gate:
        assert TS.KEY_GATE_KEY in names
    # the head on the memory read-out where the variant says so
    head = opts.get('model.memory_head')
    assert (model.memory_head is not None) == (head is not None)
    if head is not None:
        assert model.memory_head.in_channels == neck.out_value_channels
        assert model.memory_head.num_classes == \
            model.decode_head.num_classes
        assert model.memory_head.loss_decode.loss_weight == \
            head['loss_decode']['loss_weight']


def test_build_config_budget_and_size():
    cfg = TS.build_config(
        BASE_CONFIG, '/data/m', (48, 96), 37, load_from='a.pth', lr=5e-4)
    assert cfg.train_cfg.max_iters == 37 and cfg.train_cfg.val_interval == 37
    assert cfg.param_scheduler[0]['end'] == 37
    assert cfg.default_hooks.checkpoint.interval == 37
    assert cfg.model.data_preprocessor.size == (48, 96)
    assert cfg.optim_wrapper.optimizer.lr == 5e-4
    assert cfg.load_from == 'a.pth'
    for split in ('train', 'val', 'test'):
        assert cfg[f'{split}_dataloader'].dataset.data_root == '/data/m'
    crops = [
        t['crop_size'] for t in cfg.train_dataloader.dataset.pipeline
        if t['type'] == 'RandomCrop'
    ]
    assert crops == [(48, 96)]


def test_bad_arguments(tmp_path):
    configs = dict(base_config=BASE_CONFIG, lma_config=LMA_CONFIG)
    with pytest.raises(ValueError, match='unknown mode .rain. in `modes`'):
        TS.SuiteSettings(modes=['rain'], **configs)
    with pytest.raises(ValueError, match='unknown variant .huge.'):
        TS.SuiteSettings(modes=['blur'], variants=['huge'], **configs)
    with pytest.raises(ValueError, match='iters'):
        TS.SuiteSettings(modes=['blur'], iters=(0, 2), **configs)
    with pytest.raises(ValueError, match='at least one mode'):
        TS.SuiteSettings(modes=[], **configs)
    with pytest.raises(FileNotFoundError, match='lma_config.*nope.py'):
        TS.SuiteSettings(base_config=BASE_CONFIG, lma_config='nope.py')
    with pytest.raises(TypeError, match='SuiteSettings'):
        TS.run_suite(str(tmp_path), dict(modes=['blur']))
    # the command line names the argument at fault and starts nothing
    with pytest.raises(SystemExit, match='base_config: .*missing.py'):
        _tool().main(['--work-dir', str(tmp_path / 'w'), '--base-config',
                      str(tmp_path / 'missing.py')])
    assert not (tmp_path / 'w').exists()


def test_table_and_plot():
    rows = [
        dict(mode='clean', model='single-frame-twin', miou=90.0, tc=95.0),
        dict(mode='clean', model='light', miou=89.8, gain=-0.2, tc=95.5),
        dict(mode='blur', model='single-frame-twin', miou=86.0, ms=10.0,
             spread=0.4, tc=90.0),
        dict(mode='blur', model='light', miou=88.5, gain=2.5, ms=12.0,
             spread=1.0, gains=[2.0, 3.0], tc=91.0),
        dict(mode='noise', model='single-frame-twin', miou=50.0, ms=10.0,
             tc=80.0),
        dict(mode='noise', model='light', miou=49.0, gain=-1.0, ms=12.0,
             tc=79.0),
    ]
    # blur: half of the twin's gap to clean (2.0) is less than 3
    assert TS.mode_targets(rows) == {'blur': 2.0, 'noise': 3.0}
    md = TS.render_table(rows, ['clean', 'blur', 'noise'], ['light'])
    assert ('| blur | light | 88.50 | 1.00 | +2.50 | +2.00 .. +3.00 | 91.00 '
            '| 12.0 |') in md
    assert '| noise | light | 49.00 | - | -1.00 | - | 79.00 | 12.0 |' in md
    # degraded modes only in min/mean; blur reaches its target, noise not
    assert '| light | -1.00 | +0.75 | 1/2 | -0.20 | 2/3 |' in md
    assert 'blur +2.00, noise +3.00' in md
    png = TS.render_plot(rows, ['clean', 'blur', 'noise'], ['light'], 't')
    assert png[:8] == b'\x89PNG\r\n\x1a\n'


def test_suite_end_to_end(suite_run, tool, capsys):
    work, stdout = suite_run['work'], suite_run['stdout']
    assert '[7/7]' in stdout  # clean base + 2 modes x 3 runs
    res = suite_run['json']
    assert res['kind'] == 'lma_mmseg.temporal_suite'
    assert res['settings']['iters'] == [3, 2]
    assert [(r['mode'], r['model']) for r in res['rows']] == [
        ('noise', 'single-frame-twin'), ('noise', 'light'),
        ('noise', 'residual'), ('dropout', 'single-frame-twin'),
        ('dropout', 'light'), ('dropout', 'residual')
    ]
    twin = {r['mode']: r['miou'] for r in res['rows']
            if r['model'] == 'single-frame-twin'}
    for r in res['rows']:
        assert 0 <= r['miou'] <= 100 and r['ms'] > 0
        assert 0 <= r['tc'] <= 100 and r['spread'] == 0
        if r['model'] != 'single-frame-twin':
            assert r['gain'] == pytest.approx(r['miou'] - twin[r['mode']],
                                              abs=0.011)
    md = suite_run['md']
    assert md.count('| noise |') == 3 and md.count('| dropout |') == 3
    # TC streamed the 4 frames up to the annotated one after the memory's
    # reach (3 frames for the consecutive offsets, none for the twin)
    for run, warmup in (('light', 3), ('single-frame-twin', 0)):
        tc = json.load(open(osp.join(work, 'runs', 'noise', run, 'tc.json')))
        assert tc['offsets'] == [-3, -2, -1, 0] and tc['warmup'] == warmup
        assert tc['pairs'] == 3 * 2  # 3 pairs per snippet, 2 val snippets
    assert suite_run['png'][:8] == b'\x89PNG\r\n\x1a\n'
    # every run kept its config, its console log and its benchmark
    bench = json.load(
        open(osp.join(work, 'runs', 'noise', 'light', 'benchmark.json')))
    assert {r['role'] for r in bench['results']} == {'model', 'baseline'}
    assert 'Iter(train) [2/2]' in open(
        osp.join(work, 'runs', 'noise', 'light', 'train.log')).read()
    # the twin and every variant start from the clean single-frame model
    ckpt = osp.join(work, 'runs', 'clean', 'single-frame', 'train',
                    'iter_3.pth')
    assert torch.load(ckpt, map_location='cpu', weights_only=False)
    for run in ('single-frame-twin', 'light'):
        cfg_text = open(
            osp.join(work, 'runs', 'noise', run, f'{run}.py')).read()
        assert ckpt in cfg_text and 'max_iters=2' in cfg_text
    # a second call reuses every finished run and gives the same table
    capsys.readouterr()
    tool.main(suite_run['argv'])
    assert capsys.readouterr().out.count('reused') == 7
    assert json.load(open(osp.join(work, 'suite.json')))['rows'] == \
        res['rows']
    assert _read(osp.join(work, 'suite.md')) == md


@pytest.mark.formatted_configs
def test_finished_run_is_reused_with_tuple_settings(tmp_path):
    """A finished run's result.json (settings stored as JSON, so tuples
    are lists) is reused by a restarted suite, e.g. the motion mode's
    generator settings ``speeds=(0, 0, 2, 4, 8)``; so is one whose config
    text is laid out otherwise (yapf-formatted), but not one with another
    config."""
    data = str(tmp_path / 'no-data')
    cfg = TS.build_config(BASE_CONFIG, data, (32, 64), 2)
    settings = dict(mode='motion', generator=dict(speeds=(0, 0, 2, 4, 8)))
    formatted = TS.build_config(Config.fromfile(BASE_CONFIG), data, (32, 64),
                                2).pretty_text
    assert formatted != cfg.pretty_text
    for i, text in enumerate((cfg.pretty_text, formatted)):
        run_dir = tmp_path / f'run{i}'
        run_dir.mkdir()
        stored = dict(
            name='single-frame', miou=12.5, checkpoint='x.pth', seconds=1.0,
            settings=dict(settings, config=text))
        (run_dir / 'result.json').write_text(json.dumps(stored))
        res = TS.train_run('single-frame', str(run_dir), cfg, settings)
        assert res['reused'] and res['miou'] == 12.5
    # another learning rate: trained again (and failing here, without data)
    other = TS.build_config(BASE_CONFIG, data, (32, 64), 2, lr=1e-4)
    with pytest.raises(RuntimeError, match='training'):
        TS.train_run('single-frame', str(tmp_path / 'run1'), other, settings)


def test_suite_tune_seed(suite_run, tool, capsys):
    """--tune-seed repeats the twin and the variants with another training
    seed from the same single-frame model, in the same work dir: the
    single-frame run (and its config's seed) is the one there."""
    work = suite_run['work']
    capsys.readouterr()
    tool.main(['--work-dir', work, '--modes', 'noise', '--variants', 'light',
               '--bench-frames', '0', '--tune-seed', '1'] + TINY)
    out = capsys.readouterr().out
    base = [line for line in out.splitlines()
            if 'single-frame on clean video' in line]
    assert len(base) == 1 and '(reused)' in base[0]
    assert out.count('reused') == 1  # the twin and light train anew
    res = json.load(open(osp.join(work, 'suite.json')))
    assert res['settings']['tune_seeds'] == [1]
    assert [r['model'] for r in res['rows']] == ['single-frame-twin', 'light']
    # two seeds in one table: seed 1's runs are reused, seed 0's trained
    # (in runs/noise/NAME-seed0)
    capsys.readouterr()
    res = tool.main(['--work-dir', work, '--modes', 'noise', '--variants',
                     'light', '--bench-frames', '0', '--no-tc',
                     '--tune-seeds', '1', '0'] + TINY)
    assert capsys.readouterr().out.count('reused') == 3
    assert osp.isfile(osp.join(work, 'runs', 'noise', 'light-seed0',
                               'result.json'))
    seed1 = json.load(open(osp.join(work, 'runs', 'noise', 'light-seed1',
                                    'result.json')))['miou']
    light = next(r for r in res['rows'] if r['model'] == 'light')
    assert light['seeds'] == [1, 0] and light['mious'][0] == seed1
    assert light['miou'] == pytest.approx(sum(light['mious']) / 2, abs=0.01)
    assert light['spread'] == pytest.approx(
        max(light['mious']) - min(light['mious']), abs=0.01)
    assert len(light['gains']) == 2 and 'tc' not in light
    seeds = {}
    for run, path in (('single-frame', ('clean', 'single-frame')),
                      ('single-frame-twin',
                       ('noise', 'single-frame-twin-seed1')),
                      ('light', ('noise', 'light-seed1'))):
        text = open(osp.join(work, 'runs', *path, f'{run}.py')).read()
        seeds[run] = 'seed=1' in text.split('randomness')[1][:40]
    assert seeds == {
        'single-frame': False,
        'single-frame-twin': True,
        'light': True
    }


def test_isolated_run_trains_the_same_model(suite_run, tmp_path):
    """A run in a child process of its own (``isolate``) trains what the
    same run trains in this process."""
    done = osp.join(suite_run['work'], 'runs', 'noise', 'light')
    stored = json.load(open(osp.join(done, 'result.json')))
    cfg = Config.fromfile(stored['config'])
    res = TS.train_run('light', str(tmp_path / 'light'), cfg, {},
                       isolate=True)
    assert not res['reused']
    assert res['miou'] == pytest.approx(stored['miou'], abs=1e-6)
    a = torch.load(stored['checkpoint'], map_location='cpu',
                   weights_only=False)['state_dict']
    b = torch.load(res['checkpoint'], map_location='cpu',
                   weights_only=False)['state_dict']
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_failed_run_names_its_log_and_leaves_logging_usable(tmp_path,
                                                            capsys):
    cfg = TS.build_config(BASE_CONFIG, str(tmp_path / 'no-data'), (32, 64),
                          1)
    with pytest.raises(RuntimeError) as err:
        TS.train_run('single-frame', str(tmp_path / 'run'), cfg, {})
    text = str(err.value)
    assert 'single-frame: training' in text and 'train.log' in text
    assert 'Traceback' in text  # the log's tail ends with the traceback
    assert not (tmp_path / 'run' / 'result.json').exists()
    # the failed run's logger no longer writes to its closed log
    print_log('after the failed run', 'current')
    assert 'Logging error' not in capsys.readouterr().err
    assert not MMLogger.get_current_instance().handlers


def test_log_tail_keeps_a_deep_traceback_whole(tmp_path):
    # a stack under a long install path is longer than the usual tail
    frames = ''.join(f'  File "/{"x" * 200}/mod{i}.py", line {i}\n'
                     for i in range(40))
    log = tmp_path / 'train.log'
    log.write_text('progress\n' * 500 + 'Traceback (most recent call last):\n'
                   + frames + 'FileNotFoundError: no data\n')
    tail = TS._log_tail(str(log))
    assert tail.startswith('Traceback (most recent call last)')
    assert tail.endswith('no data\n')
    assert len(TS._log_tail(str(log), limit=1000)) == 1000
    assert TS._log_tail(str(tmp_path / 'missing.log')) == '(no log)'


def test_frozen_heap_undoes_only_its_own_freeze():
    """The suite freezes the heap it starts with and unfreezes it at the
    end; a heap its caller froze (as the test processes do,
    tests/conftest.py) stays frozen."""
    import gc
    gc.unfreeze()
    try:
        with TS._frozen_heap():
            assert gc.get_freeze_count() > 0
        assert gc.get_freeze_count() == 0
        gc.freeze()
        frozen = gc.get_freeze_count()
        with TS._frozen_heap():
            assert gc.get_freeze_count() == frozen
        assert gc.get_freeze_count() == frozen
    finally:  # the test process's frozen heap, as it was
        gc.collect()
        gc.freeze()
