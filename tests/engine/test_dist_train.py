"""tools/dist_train.sh: 2 processes, gloo on CPU, the LMA-ERFNet demo config
(configs/demo/lma-erfnet_demo.py) on a few demo clips."""
import os
import os.path as osp
import socket
import subprocess
import sys
import time

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
HERE = osp.dirname(osp.abspath(__file__))
ITERS = 3
DEMO_CONFIG = osp.join(ROOT, 'configs', 'demo', 'lma-erfnet_demo.py')

CONFIG = """
_base_ = [{base!r}]
custom_imports = dict(
    imports=['lma_mmseg', 'rank_dump_hook'], allow_failed_imports=False)
data_root = {data_root!r}
load_from = None
crop_size = (48, 96)
# the demo pipeline without the upscaling, for 64x128 frames
train_pipeline = [
    dict(type='LoadClipFromFiles'),
    dict(
        type='ClipTransformBroadcaster',
        transforms=[
            dict(type='RandomCrop', crop_size=crop_size),
            dict(type='RandomFlip', prob=0.5),
        ]),
    dict(type='PackClipSegInputs'),
]
norm_cfg = dict(type='{norm}', requires_grad=True)
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
train_cfg = dict(max_iters={iters}, val_interval=10**6)
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(type='AtomicCheckpointHook', interval={iters}))
custom_hooks = [dict(type='RankStateDumpHook')]
env_cfg = dict(dist_cfg=dict(backend='gloo'))
model_wrapper_cfg = dict(type='DeviceAwareDistributedDataParallel')
"""


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _dist_train(tmp_path, data_root, norm='BN'):
    config = tmp_path / 'lma_dist.py'
    config.write_text(
        CONFIG.format(
            base=DEMO_CONFIG, data_root=str(data_root), norm=norm,
            iters=ITERS))
    work_dir = tmp_path / 'work'
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        PORT=str(_free_port()),
        PYTHONPATH=os.pathsep.join([HERE,
                                    os.environ.get('PYTHONPATH', '')]),
        OMP_NUM_THREADS='1')
    start = time.monotonic()
    proc = subprocess.run(
        [
            'bash',
            osp.join(ROOT, 'tools', 'dist_train.sh'),
            str(config), '2', '--work-dir',
            str(work_dir)
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600)
    return proc, work_dir, time.monotonic() - start


def test_two_cpu_processes_end_with_identical_parameters(tmp_path, demo_data):
    proc, work_dir, wall = _dist_train(tmp_path, demo_data)
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
    # the trained fusion differ by the ranks' own last update (with plain
    # BN; SyncBN on GPUs keeps them equal), and the checkpoint has rank 0's
    buffers0, buffers1 = (
        states[0, 'after']['buffers'], states[1, 'after']['buffers'])
    assert buffers0.keys() == buffers1.keys()
    for name in buffers0:
        if not name.startswith('neck.'):
            torch.testing.assert_close(
                buffers0[name], buffers1[name], rtol=0, atol=0, msg=name)
    # the trainable part (memory heads + fusion) did train; the frozen
    # encoder and decoder did not change
    trainable = set(states[0, 'after']['trainable'])
    assert trainable and all(n.startswith('neck.') for n in trainable)
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
