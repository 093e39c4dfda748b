"""Checkpoints written by mmengine's Runner load under torch >= 2.6.

torch loads with ``weights_only=True``; :mod:`lma_mmseg.compat` allow-lists
exactly the globals mmengine's checkpoints carry, so loading and resuming work
while any other pickled object is still refused.
"""
import pickle

import pytest
import torch
from mmengine.runner import Runner, load_checkpoint

import lma_mmseg  # noqa: F401  (applies the allow-list)
from helpers.tiny_runner import tiny_cfg


class UnrelatedObject:
    """A class no checkpoint loader should ever instantiate."""

    def __init__(self, payload):
        self.payload = payload


def build_runner(work_dir, max_iters, resume=False):
    """The tiny training set-up with mmengine's own CheckpointHook."""
    cfg = tiny_cfg(work_dir, max_iters, resume=resume,
                   checkpoint_type='CheckpointHook')
    cfg.experiment_name = f'compat_{max_iters}_{int(resume)}'
    return Runner.from_cfg(cfg)


def test_runner_resume_continues_from_saved_iteration(tmp_path):
    runner = build_runner(tmp_path, max_iters=2)
    runner.train()
    ckpt = tmp_path / 'iter_2.pth'
    assert ckpt.is_file()
    lr_after_two = runner.optim_wrapper.get_lr()['lr'][0]

    # The checkpoint holds what torch's default loader used to refuse.
    raw = torch.load(ckpt, map_location='cpu')  # weights_only=True default
    buffers = raw['message_hub']['log_scalars']
    assert type(buffers['train/loss']).__name__ == 'HistoryBuffer'

    resumed = build_runner(tmp_path, max_iters=4, resume=True)
    resumed.train()
    # resume picked up iteration 2 and the LR schedule state, then ran on
    assert resumed.iter == 4
    assert (tmp_path / 'iter_4.pth').is_file()
    hub = resumed.message_hub
    losses = hub.get_scalar('train/loss').data[0]
    assert len(losses) == 4  # 2 restored from the checkpoint + 2 new
    state = torch.load(tmp_path / 'iter_4.pth', map_location='cpu')
    assert state['meta']['iter'] == 4
    assert state['param_schedulers'][0]['_global_step'] == 4
    assert resumed.optim_wrapper.get_lr()['lr'][0] < lr_after_two

    # load_checkpoint into a fresh model works the same way
    model = resumed.model
    load_checkpoint(model, str(ckpt), map_location='cpu')


def test_weights_only_is_not_disabled():
    import os
    assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' not in os.environ
    assert 'TORCH_FORCE_WEIGHTS_ONLY_LOAD' not in os.environ or \
        os.environ['TORCH_FORCE_WEIGHTS_ONLY_LOAD'] != '0'


def test_checkpoint_with_unrelated_object_is_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save(
        dict(state_dict=dict(w=torch.zeros(2)), meta=UnrelatedObject(1)),
        path)
    with pytest.raises(pickle.UnpicklingError, match='UnrelatedObject'):
        torch.load(path, map_location='cpu')
    with pytest.raises(pickle.UnpicklingError, match='UnrelatedObject'):
        load_checkpoint(torch.nn.Linear(2, 2), str(path), map_location='cpu')


def test_getattr_is_only_allowed_on_history_buffer(tmp_path):
    """``getattr`` is allow-listed for HistoryBuffer's methods alone."""
    from collections import OrderedDict

    class Sneaky:

        def __reduce__(self):
            # OrderedDict itself is allowed; getattr on it must not be
            return getattr, (OrderedDict, 'fromkeys')

    path = tmp_path / 'getattr.pth'
    torch.save(dict(meta=Sneaky()), path)
    with pytest.raises(pickle.UnpicklingError, match='refused getattr'):
        torch.load(path, map_location='cpu')
