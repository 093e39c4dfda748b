"""Degradation modes of the synthetic video generator: the default data is
unchanged, each mode touches only the annotated frame (occlusion: only the
occluders), severity 0 is the clean frame, labels are never degraded, each
degradation does what it says (measured), and the degradations are one
registered class each."""
import glob
import hashlib
import importlib.util
import json
import os.path as osp

import cv2
import numpy as np
import pytest

from lma_mmseg.datasets.prep import degradations as D
from lma_mmseg.datasets.prep import synthetic as S

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SIZE = (64, 128)

# Hash of the decoded images of a small tree written by the generator
# before the degradation modes existed (same arguments): the default mode
# must keep writing exactly the demo data.
DEFAULT_TREE_HASHES = {
    'regions':
    '6e670b6b5f1a5505d55c74b96e1a5354a57bab315a100b4e84d8cae0110371e3',
    'blocks':
    'dd198cd5398048669402a7e23c8e3f39f7d4a7ceaa16f4649cbb7027ae931d19',
}


def tree_hash(root):
    h = hashlib.sha256()
    for p in sorted(glob.glob(osp.join(root, '**', '*.png'),
                              recursive=True)):
        h.update(osp.relpath(p, root).encode())
        h.update(cv2.imread(p, cv2.IMREAD_UNCHANGED).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize('hide', ['regions', 'blocks'])
def test_default_mode_writes_the_same_data(tmp_path, hide):
    kw = dict(size=(48, 96), seed=5, num_train=3, num_val=2, num_test=1)
    S.make_demo_data(str(tmp_path / 'a'), S.DemoDataSettings(hide=hide, **kw))
    assert tree_hash(str(tmp_path / 'a')) == DEFAULT_TREE_HASHES[hide]
    # spelled out: the same tree
    S.make_demo_data(
        str(tmp_path / 'b'),
        S.DemoDataSettings(hide=hide, mode='glare', severity=1.0, **kw))
    assert tree_hash(str(tmp_path / 'b')) == DEFAULT_TREE_HASHES[hide]


def snippet(mode, severity, speeds=None, index=1):
    settings = S.DemoDataSettings(
        size=SIZE,
        hidden_range=(0.3, 0.5),
        noise_std=6.0,
        hide='regions',
        mode=mode,
        severity=severity,
        speeds=speeds)
    return S.SnippetRenderer(
        np.random.default_rng([0, 0, index]),
        settings,
        mode_rng=np.random.default_rng([0, 0, index, 1]))


def render(snip, frames=range(S.KEY_FRAME + 1)):
    out = [snip.frame(t) for t in frames]
    return [o[0] for o in out], [o[1] for o in out]


def key_frame(snip):
    """The key frame, rendered after frames 0..18 (the per-frame noise
    comes from one generator in frame order)."""
    return render(snip)[0][S.KEY_FRAME]


@pytest.fixture(scope='module')
def clean():
    """Frames 0..19 and labels at severity 0 (the same for every mode)."""
    return render(snippet('blur', 0.0))


def test_one_registered_class_per_mode():
    assert tuple(D.DEGRADATIONS) == ('glare', 'occlusion', 'blur', 'noise',
                                     'dropout')
    for name, cls in D.DEGRADATIONS.items():
        assert issubclass(cls, D.Degradation) and cls.name == name
        assert snippet(name, 1.0).degradation.__class__ is cls
    with pytest.raises(KeyError, match='glare'):
        D.register_degradation('glare')(D.Glare)

    @D.register_degradation('test-invert')
    class Invert(D.Degradation):
        note = 'inverted'

        def degrade_key(self, img, tex):
            return 255 - img

    try:
        snip = snippet('test-invert', 1.0)
        ref = snippet('glare', 0.0)
        # the whole key frame, inverted before the same sensor noise
        assert snip.degraded_mask().all()
        inv = key_frame(snip).astype(np.float64).ravel()
        clean = key_frame(ref).astype(np.float64).ravel()
        assert np.corrcoef(inv, clean)[0, 1] < -0.9
    finally:
        del D.DEGRADATIONS['test-invert']


@pytest.mark.parametrize('mode', list(D.DEGRADATIONS))
def test_severity_zero_is_the_clean_render(mode, clean):
    imgs, labels = render(snippet(mode, 0.0))
    for a, b in zip(imgs, clean[0]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(labels, clean[1]):
        np.testing.assert_array_equal(a, b)


def test_clean_key_frame_shows_the_class_colours(clean):
    """No glare/fog on the clean key frame: every pixel is its class colour
    plus texture and noise, as on the earlier frames."""
    snip = snippet('glare', 0.0)
    img, label = clean[0][S.KEY_FRAME], clean[1][S.KEY_FRAME]
    hidden = snip.hidden > 0
    assert hidden.mean() > 0.2
    err = np.abs(img.astype(np.float32) - S.class_colours()[label])
    # texture amplitude 40, noise 6, flicker 6: far below glare's ~100
    assert np.median(err[hidden].max(-1)) < S.TEXTURE_AMPLITUDE + 20
    glared = key_frame(snippet('glare', 1.0))
    err1 = np.abs(glared.astype(np.float32) - S.class_colours()[label])
    assert np.median(err1[hidden].max(-1)) > S.TEXTURE_AMPLITUDE + 30


@pytest.mark.parametrize('mode', list(D.DEGRADATIONS))
def test_mode_changes_the_key_frame_only(mode, clean):
    snip = snippet(mode, 1.0)
    imgs, labels = render(snip)
    for t in range(S.KEY_FRAME):
        if mode == 'occlusion':
            # only under the occluders of that frame
            diff = np.any(imgs[t] != clean[0][t], axis=-1)
            occ = snip.degradation.occluder_mask(t)
            assert occ.any() and not (diff & ~occ).any(), t
            assert diff[occ].mean() > 0.7
        else:
            np.testing.assert_array_equal(imgs[t], clean[0][t])
    for a, b in zip(labels, clean[1]):
        np.testing.assert_array_equal(a, b)  # labels are the truth
    key_diff = np.any(imgs[S.KEY_FRAME] != clean[0][S.KEY_FRAME], axis=-1)
    assert key_diff.mean() > 0.2


def grad_energy(img):
    g = img.astype(np.float64)
    return (np.diff(g, axis=0)**2).mean() + (np.diff(g, axis=1)**2).mean()


def test_blur_lowers_gradient_energy_and_contrast(clean):
    key = key_frame(snippet('blur', 1.0))
    ref = clean[0][S.KEY_FRAME]
    # the sensor noise (std 6) stays, so the ratio does not reach 0
    assert grad_energy(key) < 0.25 * grad_energy(ref)
    assert key.astype(np.float64).std() < 0.6 * ref.astype(np.float64).std()
    half = key_frame(snippet('blur', 0.5))
    assert grad_energy(key) < grad_energy(half) < grad_energy(ref)


def test_dropout_darkens(clean):
    key = key_frame(snippet('dropout', 1.0))
    ref = clean[0][S.KEY_FRAME].astype(np.float64)
    assert key.mean() < (D.MIN_EXPOSURE + 0.05) * ref.mean()
    half = key_frame(snippet('dropout', 0.5))
    assert key.mean() < half.mean() < ref.mean()


def local_var(img):
    g = img.astype(np.float32)
    mean = cv2.blur(g, (5, 5))
    return (cv2.blur(g * g, (5, 5)) - mean * mean).mean(-1)


@pytest.mark.parametrize('severity', [0.4, 1.0])
def test_noise_blocks_cover_their_fraction_and_raise_local_variance(
        severity, clean):
    snip = snippet('noise', severity)
    key = key_frame(snip)
    cover = snip.degraded_mask()
    assert abs(cover.mean() - D.MAX_COVER * severity) < 0.07
    inner = cv2.erode(cover.astype(np.uint8), np.ones((5, 5))) > 0
    var = local_var(key)
    ref = local_var(clean[0][S.KEY_FRAME])
    assert np.median(var[inner]) > 3 * np.median(ref[inner])
    # outside the blocks the frame is the clean one
    np.testing.assert_array_equal(key[~cover], clean[0][S.KEY_FRAME][~cover])


@pytest.mark.parametrize('severity', [0.4, 1.0])
def test_occluders_cover_their_fraction_and_move(severity, clean):
    snip = snippet('occlusion', severity)
    key_mask = snip.degradation.occluder_mask(S.KEY_FRAME)
    assert abs(key_mask.mean() - D.MAX_COVER * severity) < 0.07
    key = key_frame(snip).astype(np.float32)
    # grey: the channels agree up to texture-free noise
    spread = key.max(-1) - key.min(-1)
    assert np.median(spread[key_mask]) < 25
    # the memory frames show part of what the key frame's occluders hide
    prev = snip.degradation.occluder_mask(S.KEY_FRAME - 3)
    assert (key_mask & ~prev).sum() > 0.1 * key_mask.sum()


def test_speeds_add_objects_at_their_speed():
    plain = snippet('glare', 1.0)
    snip = snippet('glare', 1.0, speeds=(0, 4))
    assert len(snip.objects) == len(plain.objects) + 2
    static, fast = snip.objects[-2:]
    pan = snip.pan.astype(np.float32)
    for t in (10, 15, 19):
        # a static object moves with the scene (against the pan)
        np.testing.assert_allclose(
            np.array(snip.centre(static, t)) -
            np.array(snip.centre(static, S.KEY_FRAME)),
            -(pan[t] - pan[S.KEY_FRAME]),
            atol=1e-4)
    step = np.array(fast['track'][19]) - fast['track'][18]
    rel = step + (pan[19] - pan[18])
    assert np.hypot(*rel) == pytest.approx(4 * snip.unit, rel=1e-4)
    assert max(static['radii']) <= S.SPEED_OBJECT_RADII[0][1] * snip.unit
    # the objects are in the labels
    _, label = snip.frame(S.KEY_FRAME)
    seg = snip.segments(S.KEY_FRAME)
    assert (seg == seg.max()).any()
    assert label.shape == SIZE


def test_bad_arguments():
    with pytest.raises(ValueError, match='mode'):
        S.DemoDataSettings(size=(32, 64), mode='rain')
    with pytest.raises(ValueError, match='severity'):
        S.DemoDataSettings(size=(32, 64), severity=1.5)
    with pytest.raises(ValueError, match='speeds'):
        S.DemoDataSettings(size=(32, 64), speeds=(-1, ))


def test_cli_mode_options(tmp_path, capsys):
    out = str(tmp_path / 'd')
    spec = importlib.util.spec_from_file_location(
        'make_demo_data_tool', osp.join(REPO, 'tools', 'make_demo_data.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main([
        '--out', out, '--size', '32', '64', '--num-train', '2', '--num-val',
        '1', '--num-test', '0', '--mode', 'noise', '--severity', '0.6',
        '--speeds', '0', '3'
    ])
    stdout = capsys.readouterr().out
    meta = json.load(open(osp.join(out, 'meta.json')))
    assert meta['mode'] == 'noise' and meta['severity'] == 0.6
    assert meta['speeds'] == [0.0, 3.0]
    assert abs(meta['hidden_fraction']['mean'] - 0.3) < 0.1
    assert 'colour noise' in open(osp.join(out, 'README.txt')).read()
    assert 'hidden by noise' in stdout
