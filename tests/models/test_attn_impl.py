"""LocalMemoryNeck's ``attn_impl`` on the demo LMA-ERFNet: the three
implementations give the same logits, and a machine without the compiled
extension runs the model on the pure PyTorch path."""
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch

from lma_mmseg.apis import init_model

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'demo', 'lma-erfnet_demo.py')
H, W = 64, 128
IMPLS = ('fused', 'unfused', 'reference')


def build(attn_impl):
    return init_model(
        CONFIG, device='cpu', cfg_options={'model.neck.attn_impl': attn_impl})


@pytest.fixture(scope='module')
def demo():
    """The demo model with random weights ('fused'), a clip of T=3 memory
    frames and a key frame (1, 4, 3, H, W), and its logits."""
    torch.manual_seed(0)
    model = build('fused')
    with torch.no_grad():
        for m in model.modules():  # non-trivial BN statistics
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        # the demo neck is residual and identity at init (alpha = 0) with a
        # zero position prior: give both values so the read-out counts
        # (alpha 2 to 4: the random fusion's output is small)
        model.neck.residual_scale.uniform_(2.0, 4.0)
        model.neck.position_bias.normal_(0, 1)
    clip = torch.randn(1, 4, 3, H, W)
    with torch.no_grad():
        logits = model(clip, mode='tensor')
        lone = model(clip[:, -1:], mode='tensor')  # empty memory
    # the memory read-out changes the logits
    assert (logits - lone).abs().max() > 1e-2
    return model, clip, logits


def test_each_attn_impl_gives_the_same_logits(demo):
    model, clip, expected = demo
    assert model.neck.attn_impl == 'fused'
    for impl in IMPLS[1:]:
        other = build(impl)
        assert other.neck.attn_impl == impl
        other.load_state_dict(model.state_dict(), strict=True)
        with torch.no_grad():
            logits = other(clip, mode='tensor')
        assert logits.shape == expected.shape
        err = (logits - expected).abs().max().item()
        assert err <= 1e-4, (impl, err)


# Run in a child process with lma_mmseg._ext made unimportable before
# lma_mmseg is imported; prints what the parent asserts, as JSON.
_WITHOUT_EXT = r'''
import json, sys, warnings
sys.modules['lma_mmseg._ext'] = None  # import lma_mmseg._ext now fails
config, state, data = sys.argv[1:4]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    import lma_mmseg
    import lma_mmseg.ops as ops
import_warnings = [str(w.message) for w in caught
                   if 'lma_mmseg._ext' in str(w.message)]
import torch
q, k, v = torch.randn(1, 2, 4, 5), torch.randn(1, 2, 2, 4, 5), \
    torch.randn(1, 2, 3, 4, 5)
attn = torch.rand(1, 2, 9, 4, 5)
calls = {
    'local_attention': lambda: ops.local_attention(q, k, v, 3),
    'local_attention_unfused': lambda: ops.local_attention_unfused(
        q, k, v, 3),
    'local_correlation': lambda: ops.local_correlation(q, k, 3),
    'local_aggregation': lambda: ops.local_aggregation(attn, v, 3),
    'cpu_isa': ops.cpu_isa,
}
errors = {}
for name, call in calls.items():
    try:
        call()
        errors[name] = None
    except ImportError as e:
        errors[name] = str(e)
reference = list(ops.local_attention_reference(q, k, v, 3).shape)
from lma_mmseg.apis import init_model
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    model = init_model(config, device='cpu')
fallback_warnings = [str(w.message) for w in caught
                     if 'attn_impl' in str(w.message)]
model.load_state_dict(torch.load(state), strict=True)
data = torch.load(data)
with torch.no_grad():
    logits = model(data['clip'], mode='tensor')
print(json.dumps(dict(
    import_warnings=import_warnings,
    ext_available=ops.ext_available(),
    ext_has_cuda=ops.ext_has_cuda(),
    errors=errors,
    reference=reference,
    fallback_warnings=fallback_warnings,
    attn_impl=model.neck.attn_impl,
    max_err=(logits - data['expected']).abs().max().item())))
'''


def test_runs_without_the_compiled_extension(demo, tmp_path):
    model, clip, expected = demo
    state, data = tmp_path / 'state.pth', tmp_path / 'data.pth'
    torch.save(model.state_dict(), str(state))
    torch.save(dict(clip=clip, expected=expected), str(data))
    proc = subprocess.run(
        [sys.executable, '-c', _WITHOUT_EXT, CONFIG,
         str(state), str(data)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # the package imports and warns once
    assert len(result['import_warnings']) == 1, result['import_warnings']
    assert 'cannot be imported' in result['import_warnings'][0]
    assert not result['ext_available'] and not result['ext_has_cuda']
    # the compiled entry points name the missing extension
    for name, error in result['errors'].items():
        assert error is not None, f'{name} ran without the extension'
        assert 'lma_mmseg._ext' in error and 'not built' in error, error
    assert result['reference'] == [1, 3, 4, 5]
    # the neck falls back to the reference with one warning
    assert len(result['fallback_warnings']) == 1, result['fallback_warnings']
    assert "attn_impl='fused'" in result['fallback_warnings'][0]
    assert result['attn_impl'] == 'reference'
    assert result['max_err'] <= 1e-4
