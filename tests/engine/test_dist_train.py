"""tools/dist_train.sh: 2 processes, gloo on CPU, the LMA-ERFNet demo config
(configs/demo/lma-erfnet_demo.py) on a few demo clips: one documented
training run (shared by the tests of its ranks, of its checkpoint with
tools/dist_test.sh and of the command line), and a SyncBN run that must
stop with a clear error."""
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

# The demo config with SyncBN in the decoder and the fusion, on 48x96 crops
SYNCBN_REST = """
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(norm_cfg=norm_cfg),
    neck=dict(fusion=dict(norm_cfg=norm_cfg)))
train_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = None
test_cfg = None
test_evaluator = None
train_cfg = dict(max_iters=1, val_interval=10**6)
"""


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _dist_env():
    import sys
    return dict(PYTHON=sys.executable, PORT=str(_free_port()),
                OMP_NUM_THREADS='1')


# What the shared run adds to the documented command line, for the checks
# below: every rank saves its state before and after training, and (the
# paper's setting) only the memory heads, the fusion and the head on the
# memory read-out train; one clip per rank and step, at the size of the
# data (64x128, not padded to the 128x256 crop): the wiring is checked, not
# the throughput.
CHECK_OPTIONS = (
    'train_dataloader.batch_size=1',
    'model.data_preprocessor.size=[64,128]',
    # a full import path: mmengine imports the hook's module itself
    'default_hooks.rank_dump.type=helpers.rank_dump_hook.RankStateDumpHook',
    'default_hooks.logger.interval=1',
    'model.freeze=[backbone,decode_head]',
)


@pytest.fixture(scope='module')
def dist_run(tmp_path_factory, demo_data):
    """``tools/dist_train.sh configs/demo/lma-erfnet_demo.py 2 --cfg-options
    train_cfg.max_iters=3`` as a user types it (README), in a folder with
    the demo data (``data/demo``) and the single-frame checkpoint the config
    starts from, plus :data:`CHECK_OPTIONS`: one 2-process training run,
    shared by the tests below."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    tmp = tmp_path_factory.mktemp('dist_train')
    (tmp / 'data').mkdir()
    (tmp / 'data' / 'demo').symlink_to(demo_data)
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'demo', 'erfnet_demo.py'))
    start = tmp / Config.fromfile(DEMO_CONFIG).load_from
    start.parent.mkdir(parents=True)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    torch.save(dict(state_dict=MODELS.build(cfg.model).state_dict()), start)
    (tmp / 'configs').symlink_to(osp.join(ROOT, 'configs'))
    begin = time.monotonic()
    proc = run_tool(
        'dist_train.sh', 'configs/demo/lma-erfnet_demo.py', 2,
        '--cfg-options', f'train_cfg.max_iters={ITERS}', *CHECK_OPTIONS,
        cwd=tmp, env=_dist_env(), timeout=900)
    work_dir = tmp / 'work_dirs' / 'lma-erfnet_demo'
    return proc, work_dir, time.monotonic() - begin


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
    config = tmp_path / 'lma_syncbn.py'
    config.write_text(
        small_demo_config(DEMO_CONFIG, str(demo_data),
                          'helpers.rank_dump_hook', SYNCBN_REST))
    proc = run_tool('dist_train.sh', config, 2, '--work-dir',
                    tmp_path / 'work', env=_dist_env())
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
def test_demo_config_as_documented(dist_run):
    """The documented command (:func:`dist_run`) needs no backend or
    wrapper option on a machine without CUDA: the launch path picks gloo
    and the CPU wrapper; rank 0 writes the checkpoint into the config's
    default work folder."""
    proc, work_dir, _ = dist_run
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert (work_dir /
            'last_checkpoint').read_text().endswith(f'iter_{ITERS}.pth')
    assert "replaced by 'gloo'" in log
