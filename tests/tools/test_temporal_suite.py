"""tools/analysis/temporal_suite.py and lma_mmseg.evaluation.temporal_suite:
the variants build the models they describe, the runs get the stated
budgets, and the suite runs end to end on tiny data."""
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import lma_mmseg  # noqa: F401  (registers the components)
from lma_mmseg.evaluation import temporal_suite as TS

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.mark.parametrize('variant', list(TS.VARIANTS))
def test_variants_build_what_they_say(variant):
    if not TS.available(variant):
        pytest.skip(f'{variant}: this neck lacks '
                    f'{TS.VARIANTS[variant]["needs"]}')
    cfg = TS.build_config(
        TS.LMA_CONFIG, 'data/x', (32, 64), 10, load_from='ckpt.pth',
        options=TS.VARIANTS[variant]['options'])
    init_default_scope('mmseg')
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


def test_build_config_budget_and_size():
    cfg = TS.build_config(
        TS.BASE_CONFIG, '/data/m', (48, 96), 37, load_from='a.pth', lr=5e-4)
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
    with pytest.raises(ValueError, match='unknown mode'):
        TS.run_suite(str(tmp_path), modes=['rain'])
    with pytest.raises(ValueError, match='unknown variant'):
        TS.run_suite(str(tmp_path), modes=['blur'], variants=['huge'])
    with pytest.raises(ValueError, match='iters'):
        TS.run_suite(str(tmp_path), modes=['blur'], iters=(0, 2))


def test_table_and_plot():
    rows = [
        dict(mode='blur', model='single-frame-twin', miou=40.0, ms=10.0),
        dict(mode='blur', model='light', miou=45.5, gain=5.5, ms=12.0),
        dict(mode='noise', model='single-frame-twin', miou=50.0, ms=10.0),
        dict(mode='noise', model='light', miou=49.0, gain=-1.0, ms=12.0),
    ]
    md = TS.render_table(rows, ['blur', 'noise'], ['light'])
    assert '| blur | light | 45.50 | +5.50 | 12.0 |' in md
    assert '| light | -1.00 | +2.25 | 2 |' in md
    png = TS.render_plot(rows, ['blur', 'noise'], ['light'], 't')
    assert png[:8] == b'\x89PNG\r\n\x1a\n'


@pytest.mark.slow
def test_suite_end_to_end(tmp_path):
    work = str(tmp_path / 'suite')
    cmd = [
        sys.executable,
        osp.join(REPO, 'tools', 'analysis', 'temporal_suite.py'),
        '--work-dir', work, '--modes', 'noise', 'dropout', '--variants',
        'light', 'residual', '--iters', '3', '2', '--size', '32', '64',
        '--num-train', '3', '--num-val', '2', '--bench-frames', '2',
        '--bench-warmup', '1'
    ]
    env = dict(__import__('os').environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert '[7/7]' in proc.stdout  # clean base + 2 modes x 3 runs
    res = json.load(open(osp.join(work, 'suite.json')))
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
        if r['model'] != 'single-frame-twin':
            assert r['gain'] == pytest.approx(r['miou'] - twin[r['mode']],
                                              abs=0.011)
    md = open(osp.join(work, 'suite.md')).read()
    assert md.count('| noise |') == 3 and md.count('| dropout |') == 3
    with open(osp.join(work, 'suite.png'), 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    # the twin and every variant start from the clean single-frame model
    ckpt = osp.join(work, 'runs', 'clean', 'single-frame', 'train',
                    'iter_3.pth')
    assert torch.load(ckpt, map_location='cpu', weights_only=False)
    for run in ('single-frame-twin', 'light'):
        cfg_text = open(
            osp.join(work, 'runs', 'noise', run, f'{run}.py')).read()
        assert ckpt in cfg_text and 'max_iters=2' in cfg_text
    # a second call reuses every finished run and gives the same table
    again = subprocess.run(
        cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count('reused') == 7
    assert json.load(open(osp.join(work, 'suite.json')))['rows'] == \
        res['rows']


def test_finished_run_is_reused_with_tuple_settings(tmp_path):
    """A finished run's result.json (settings stored as JSON, so tuples
    are lists) is reused by a restarted suite, e.g. the motion mode's
    generator settings ``speeds=(0, 0, 2, 4, 8)``."""
    cfg = TS.build_config(TS.BASE_CONFIG, '/data/m', (32, 64), 2)
    settings = dict(mode='motion', generator=dict(speeds=(0, 0, 2, 4, 8)))
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    stored = dict(
        name='single-frame', miou=12.5, checkpoint='x.pth', seconds=1.0,
        settings=dict(settings, config=cfg.pretty_text))
    (run_dir / 'result.json').write_text(json.dumps(stored))
    res = TS.train_run('single-frame', str(run_dir), cfg, settings)
    assert res['reused'] and res['miou'] == 12.5


@pytest.mark.slow
def test_suite_tune_seed(tmp_path):
    """--tune-seed repeats the twin and the variants with another training
    seed; the single-frame start keeps the config's."""
    work = str(tmp_path / 'seed1')
    cmd = [
        sys.executable,
        osp.join(REPO, 'tools', 'analysis', 'temporal_suite.py'),
        '--work-dir', work, '--modes', 'noise', '--variants', 'light',
        '--iters', '2', '2', '--size', '32', '64', '--num-train', '2',
        '--num-val', '2', '--bench-frames', '0', '--tune-seed', '1'
    ]
    env = dict(__import__('os').environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.load(open(osp.join(work, 'suite.json')))
    assert res['settings']['tune_seed'] == 1
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
