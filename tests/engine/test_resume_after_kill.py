"""SIGKILL between checkpoints, then resume: the run goes on as if nothing
had happened (same iteration count, weights, optimizer and LR state)."""
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest
import torch
from mmengine.runner import Runner

import lma_mmseg  # noqa: F401
from helpers import ROOT
from helpers.demo_config import small_demo_config
from helpers.tiny_runner import CKPT_INTERVAL, tiny_cfg
from helpers.tools import run_tool_in_process, tool_command, tool_env


def _kill_after_first_checkpoint(
        work_dir, command=None, env=None, timeout=300, clip=False):
    """Train in a subprocess; SIGKILL it once ``last_checkpoint`` exists.

    Returns the iteration of the checkpoint ``last_checkpoint`` names.
    """
    pointer = work_dir / 'last_checkpoint'
    env = env or tool_env()
    if command is None:
        command = [
            sys.executable, '-m', 'helpers.tiny_runner',
            str(work_dir), '--max-iters', '1000', '--sleep', '0.3'
        ] + (['--clip'] if clip else [])
    work_dir.mkdir(parents=True, exist_ok=True)
    # stderr goes to a file: a full pipe would block the trainer
    err_path = work_dir.parent / (work_dir.name + '.stderr')
    with open(err_path, 'w') as err:
        proc = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + timeout
            while not pointer.exists():
                assert proc.poll() is None, err_path.read_text()[-3000:]
                assert time.monotonic() < deadline, 'no checkpoint in time'
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    ckpt = pointer.read_text()
    return torch.load(ckpt, map_location='cpu')['meta']['iter']


def _assert_same_state(a, b):
    for key in ('state_dict', ):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            torch.testing.assert_close(
                a[key][name], b[key][name], rtol=0, atol=0, msg=name)
    opt_a, opt_b = a['optimizer'], b['optimizer']
    assert opt_a['param_groups'] == opt_b['param_groups']
    assert opt_a['state'].keys() == opt_b['state'].keys()
    for idx in opt_a['state']:
        for k in opt_a['state'][idx]:
            torch.testing.assert_close(
                opt_a['state'][idx][k], opt_b['state'][idx][k], rtol=0, atol=0)
    assert a['param_schedulers'] == b['param_schedulers']
    assert a['meta']['iter'] == b['meta']['iter']


@pytest.mark.parametrize('clip', [False, True], ids=['frames', 'clips'])
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, clip):
    """``clip``: the LMA model on clips with numpy-drawn crops and flips, so
    the data pipeline's random state must be resumed too."""
    killed_dir, ref_dir = tmp_path / 'killed', tmp_path / 'reference'
    killed_at = _kill_after_first_checkpoint(killed_dir, clip=clip)
    assert killed_at >= CKPT_INTERVAL and killed_at % CKPT_INTERVAL == 0
    ckpt_killed = torch.load(
        killed_dir / f'iter_{killed_at}.pth', map_location='cpu')

    target = killed_at + CKPT_INTERVAL
    # distinct experiment names: two Runners built within the same second
    # would otherwise share one MessageHub (named after the timestamp)
    resumed_cfg = tiny_cfg(killed_dir, target, resume=True, clip=clip)
    resumed_cfg.experiment_name = 'resumed'
    resumed = Runner.from_cfg(resumed_cfg)
    resumed.train()
    reference_cfg = tiny_cfg(ref_dir, target, clip=clip)
    reference_cfg.experiment_name = 'reference'
    reference = Runner.from_cfg(reference_cfg)
    reference.train()

    # the checkpoint the kill left is the uninterrupted run's one
    _assert_same_state(
        ckpt_killed,
        torch.load(ref_dir / f'iter_{killed_at}.pth', map_location='cpu'))
    # and the resumed run continued exactly as the uninterrupted one
    assert resumed.iter == reference.iter == target
    assert resumed.optim_wrapper.get_lr() == reference.optim_wrapper.get_lr()
    _assert_same_state(
        torch.load(killed_dir / f'iter_{target}.pth', map_location='cpu'),
        torch.load(ref_dir / f'iter_{target}.pth', map_location='cpu'))
    hub_r = resumed.message_hub.get_scalar('train/loss').data[0]
    hub_u = reference.message_hub.get_scalar('train/loss').data[0]
    assert len(hub_r) == len(hub_u) == target
    assert list(hub_r) == list(hub_u)
    print(
        f'killed after iteration {killed_at} was saved; resumed from '
        f'{killed_at} to {target}')


TRAIN_TOOL_CONFIG_REST = """
model = dict(data_preprocessor=dict(size=crop_size))
train_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = None
test_cfg = None
test_evaluator = None
train_cfg = dict(max_iters=1000, val_interval=10**6)
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(type='AtomicCheckpointHook', interval=2))
custom_hooks = [dict(type='EngineSlowIterHook', seconds=0.3)]
"""


@pytest.mark.slow
def test_train_tool_resume_lma_demo(tmp_path, demo_data):
    """``tools/train.py``, SIGKILL, ``tools/train.py --resume`` on
    configs/demo/lma-erfnet_demo.py."""
    root = ROOT
    config = tmp_path / 'lma_resume.py'
    config.write_text(
        small_demo_config(
            osp.join(root, 'configs', 'demo', 'lma-erfnet_demo.py'),
            str(demo_data), 'helpers.tiny_runner', TRAIN_TOOL_CONFIG_REST))
    work_dir = tmp_path / 'work'
    env = tool_env()
    train = tool_command('train.py', config, '--work-dir', work_dir)
    killed_at = _kill_after_first_checkpoint(work_dir, command=train, env=env)
    assert killed_at >= 2 and killed_at % 2 == 0
    target = killed_at + 2
    # the resumed run needs no process of its own: in this process
    proc = run_tool_in_process(
        'train.py', config, '--work-dir', work_dir, '--resume',
        '--cfg-options', f'train_cfg.max_iters={target}')
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert f'resumed epoch: 0, iter: {killed_at}' in log, log[-4000:]
    before = torch.load(work_dir / f'iter_{killed_at}.pth', map_location='cpu')
    after = torch.load(work_dir / f'iter_{target}.pth', map_location='cpu')
    assert (work_dir / 'last_checkpoint').read_text() == str(
        work_dir / f'iter_{target}.pth')
    assert after['meta']['iter'] == target
    assert after['param_schedulers'][0]['_global_step'] == target
    assert after['param_schedulers'][0]['end'] == \
        before['param_schedulers'][0]['end']
    # Adam went on counting its steps from the checkpoint
    steps_before = {
        int(s['step'])
        for s in before['optimizer']['state'].values()
    }
    steps_after = {
        int(s['step'])
        for s in after['optimizer']['state'].values()
    }
    assert steps_before == {killed_at} and steps_after == {target}
    losses = after['message_hub']['log_scalars']['train/loss'].data[0]
    assert len(losses) == target
    print(
        f'tools/train.py killed after iteration {killed_at} was saved; '
        f'--resume went from {killed_at} to {target}')
