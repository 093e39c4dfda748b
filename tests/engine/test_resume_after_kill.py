"""SIGKILL between checkpoints, then resume: the run goes on as if nothing
had happened (same iteration count, weights, optimizer and LR state)."""
import os.path as osp
import signal
import subprocess
import sys
import time

import torch
from mmengine.runner import Runner

import lma_mmseg  # noqa: F401
from tiny_runner import CKPT_INTERVAL, tiny_cfg

HERE = osp.dirname(osp.abspath(__file__))


def _kill_after_first_checkpoint(work_dir, timeout=300):
    """Train in a subprocess; SIGKILL it once ``last_checkpoint`` exists.

    Returns the iteration of the checkpoint ``last_checkpoint`` names.
    """
    pointer = work_dir / 'last_checkpoint'
    proc = subprocess.Popen(
        [sys.executable,
         osp.join(HERE, 'tiny_runner.py'),
         str(work_dir), '--max-iters', '1000', '--sleep', '0.3'],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True)
    try:
        deadline = time.monotonic() + timeout
        while not pointer.exists():
            assert proc.poll() is None, proc.stderr.read()[-3000:]
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
                opt_a['state'][idx][k], opt_b['state'][idx][k], rtol=0,
                atol=0)
    assert a['param_schedulers'] == b['param_schedulers']
    assert a['meta']['iter'] == b['meta']['iter']


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    killed_dir, ref_dir = tmp_path / 'killed', tmp_path / 'reference'
    killed_at = _kill_after_first_checkpoint(killed_dir)
    assert killed_at >= CKPT_INTERVAL and killed_at % CKPT_INTERVAL == 0
    ckpt_killed = torch.load(
        killed_dir / f'iter_{killed_at}.pth', map_location='cpu')

    target = killed_at + CKPT_INTERVAL
    resumed = Runner.from_cfg(tiny_cfg(killed_dir, target, resume=True))
    resumed.train()
    reference = Runner.from_cfg(tiny_cfg(ref_dir, target))
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
    print(f'killed after iteration {killed_at} was saved; resumed from '
          f'{killed_at} to {target}')
