"""tools/dist_train.sh: 2 processes, gloo on CPU, the LMA-ERFNet demo config
(configs/demo/lma-erfnet_demo.py) on a few demo clips."""
import os.path as osp
import socket
import time

import pytest
import torch

from helpers import ROOT
from helpers.demo_config import small_demo_config
from helpers.tools import run_tool

ITERS = 3
DEMO_CONFIG = osp.join(ROOT, 'configs', 'demo', 'lma-erfnet_demo.py')

CONFIG_REST = """
norm_cfg = dict(type='{norm}', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(norm_cfg=norm_cfg),
    neck=dict(fusion=dict(norm_cfg=norm_cfg)),
    # the paper's setting: only the memory heads and the fusion train
    freeze=('backbone', 'decode_head'))
train_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = None
test_cfg = None
test_evaluator = None
train_cfg = dict(max_iters={iters}, val_interval=10**6)
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(type='AtomicCheckpointHook', interval={iters}))
custom_hooks = [dict(type='RankStateDumpHook')]
"""


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _dist_train(tmp_path, data_root, norm='BN'):
    config = tmp_path / 'lma_dist.py'
    config.write_text(
        small_demo_config(
            DEMO_CONFIG, str(data_root), 'helpers.rank_dump_hook',
            CONFIG_REST.format(norm=norm, iters=ITERS)))
    work_dir = tmp_path / 'work'
    start = time.monotonic()
    # no backend or wrapper option: on CPU the launch path picks them
    proc = run_tool(
        'dist_train.sh', config, 2, '--work-dir', work_dir,
        env=_dist_env())
    return proc, work_dir, time.monotonic() - start


def _dist_env():
    import sys
    return dict(PYTHON=sys.executable, PORT=str(_free_port()),
                OMP_NUM_THREADS='1')


@pytest.fixture(scope='module')
def dist_run(tmp_path_factory, demo_data):
    """One 2-process training run, shared by the tests below."""
    return _dist_train(tmp_path_factory.mktemp('dist_train'), demo_data)


def test_two_cpu_processes_end_with_identical_parameters(dist_run):
    proc, work_dir, wall = dist_run
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    states = {}
    for rank in (0, 1):
        for when in ('before', 'after'):
            states[rank, when] = torch.load(
                work_dir / f'rank{rank}_{when}.pth', map_location='cpu')
    assert states[0, 'after']['iter'] == states[1, 'after']['iter'] == ITERS
    params0, params1 = states[0, 'after']['params'], states[1,
                                                            'after']['params']
    assert params0.keys() == params1.keys()
    for name in params0:
        torch.testing.assert_close(
            params0[name], params1[name], rtol=0, atol=0, msg=name)
    # BN statistics: DDP syncs rank 0's buffers at the start of every
    # forward, so those of the frozen encoder/decoder are equal; those of
    # the trained fusion and of the head on the memory read-out differ by
    # the ranks' own last update (with plain BN; SyncBN on GPUs keeps them
    # equal), and the checkpoint has rank 0's
    trained = ('neck.', 'memory_head.')
    buffers0, buffers1 = (
        states[0, 'after']['buffers'], states[1, 'after']['buffers'])
    assert buffers0.keys() == buffers1.keys()
    for name in buffers0:
        if not name.startswith(trained):
            torch.testing.assert_close(
                buffers0[name], buffers1[name], rtol=0, atol=0, msg=name)
    # the trainable part (memory heads, fusion and the demo recipe's head on
    # the read-out) did train; the frozen encoder and decoder did not change
    trainable = set(states[0, 'after']['trainable'])
    assert trainable and all(n.startswith(trained) for n in trainable)
    assert any(n.startswith('neck.') for n in trainable)
    before = states[0, 'before']['params']
    assert any(not torch.equal(before[n], params0[n]) for n in trainable)
    assert all(
        torch.equal(before[n], params0[n]) for n in params0
        if n not in trainable)
    # rank 0 wrote the checkpoint and the pointer to it
    assert (work_dir /
            'last_checkpoint').read_text().endswith(f'iter_{ITERS}.pth')
    print(f'2-process gloo training of {ITERS} iterations: {wall:.1f} s')


@pytest.mark.slow
def test_syncbn_is_refused_on_cpu_with_a_clear_error(tmp_path, demo_data):
    """torch 2.13 has no CPU SyncBatchNorm: DDP refuses CPU modules with
    SyncBN layers. The run must stop with torch's clear message (the
    README documents BN as the CPU alternative), not hang."""
    proc, _, _ = _dist_train(tmp_path, demo_data, norm='SyncBN')
    assert proc.returncode != 0
    assert 'SyncBatchNorm layers only work with GPU modules' in proc.stderr


@pytest.mark.slow
def test_dist_test_script_on_cpu(dist_run, demo_data, tmp_path):
    """tools/dist_test.sh: 2 processes test the checkpoint of the run."""
    proc, work_dir, _ = dist_run
    assert proc.returncode == 0
    proc = run_tool(
        'dist_test.sh', DEMO_CONFIG, work_dir / f'iter_{ITERS}.pth', 2,
        '--work-dir', tmp_path / 'test', '--cfg-options',
        f'test_dataloader.dataset.data_root={demo_data}',
        'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False',
        env=_dist_env())
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert 'mIoU' in log


@pytest.mark.parametrize(
    'script,args,expected', [
        ('dist_train.sh', [], 'usage:'),
        ('dist_train.sh', ['missing_config.py', '2'], 'config file not found'),
        ('dist_train.sh', [DEMO_CONFIG, 'two'], 'GPUS must be a positive'),
        (
            'dist_test.sh', [DEMO_CONFIG, 'missing.pth', '2'
                             ], 'checkpoint file not found'),
        ('dist_test.sh', [DEMO_CONFIG], 'usage:'),
    ])
def test_dist_scripts_check_their_arguments(script, args, expected):
    proc = run_tool(script, *args, timeout=60)
    assert proc.returncode == 2
    assert expected in proc.stderr


@pytest.mark.slow
def test_demo_config_as_documented(tmp_path):
    """``tools/dist_train.sh configs/demo/lma-erfnet_demo.py 2 --cfg-options
    train_cfg.max_iters=2`` exactly as a user types it, in a folder with the
    demo data (``data/demo``) and the single-frame checkpoint the config
    starts from: no backend or wrapper option on a machine without CUDA."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from lma_mmseg.datasets.prep import DemoDataSettings, make_demo_data
    make_demo_data(str(tmp_path / 'data' / 'demo'), DemoDataSettings(
        num_train=4, num_val=1, num_test=0, frames='memory'))
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'demo', 'erfnet_demo.py'))
    lma_cfg = Config.fromfile(DEMO_CONFIG)
    start = tmp_path / lma_cfg.load_from
    start.parent.mkdir(parents=True)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    torch.save(dict(state_dict=MODELS.build(cfg.model).state_dict()), start)
    (tmp_path / 'configs').symlink_to(osp.join(ROOT, 'configs'))
    proc = run_tool(
        'dist_train.sh', 'configs/demo/lma-erfnet_demo.py', 2,
        '--cfg-options', 'train_cfg.max_iters=2', cwd=tmp_path,
        env=_dist_env(), timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    work_dir = tmp_path / 'work_dirs' / 'lma-erfnet_demo'
    assert (work_dir / 'last_checkpoint').read_text().endswith('iter_2.pth')
    assert "replaced by 'gloo'" in log
