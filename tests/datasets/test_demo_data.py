"""The synthetic demo data (lma_mmseg.datasets.prep.synthetic and its
command line tools/make_demo_data.py): layout, labels, determinism and the
degradation that hides the class evidence on the annotated frame."""
import glob
import importlib.util
import json
import os.path as osp

import cv2
import numpy as np
import pytest
from cityscapesscripts.helpers.labels import trainId2label

from helpers import ROOT
from lma_mmseg.fileio import stale_temp_files


def make_demo_tool():
    """tools/make_demo_data.py, loaded in this process."""
    spec = importlib.util.spec_from_file_location(
        'make_demo_data_tool', osp.join(ROOT, 'tools', 'make_demo_data.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _files(root):
    return sorted(
        osp.relpath(p, root)
        for p in glob.glob(osp.join(root, '**', '*.png'), recursive=True))


def test_layout(demo_root, demo_spec):
    size = demo_spec['size']
    seq = osp.join(demo_root, 'leftImg8bit_sequence')
    # auto: all 30 frames for the first snippet of each city, 10..19 else.
    full = sorted(
        glob.glob(
            osp.join(
                seq, 'train', 'aachen', 'aachen_000000_*_leftImg8bit.png')))
    assert [osp.basename(p)[14:20] for p in full] == \
        [f'{t:06d}' for t in range(30)]
    part = sorted(
        glob.glob(
            osp.join(
                seq, 'train', 'aachen', 'aachen_000001_*_leftImg8bit.png')))
    assert [int(osp.basename(p)[14:20]) for p in part] == list(range(10, 20))
    for split in ('train', 'val', 'test'):
        n = demo_spec[f'num_{split}']
        keys = glob.glob(
            osp.join(
                demo_root, 'leftImg8bit', split, '*',
                '*_000019_leftImg8bit.png'))
        assert len(keys) == n
        labels = glob.glob(
            osp.join(
                demo_root, 'gtFine', split, '*', '*_gtFine_labelTrainIds.png'))
        assert len(labels) == (0 if split == 'test' else n)
        for key in keys:
            seq_key = key.replace(
                'leftImg8bit' + osp.sep, 'leftImg8bit_sequence' + osp.sep, 1)
            with open(key, 'rb') as a, open(seq_key, 'rb') as b:
                assert a.read() == b.read()
    img = cv2.imread(full[0])
    assert img.shape == (*size, 3) and img.dtype == np.uint8
    text = open(osp.join(demo_root, 'README.txt')).read()
    assert 'NOT Cityscapes' in text and 'synthetic' in text
    meta = json.load(open(osp.join(demo_root, 'meta.json')))
    assert meta['splits']['train']['snippets'] == demo_spec['num_train']


def test_labels_match_cityscapesscripts(demo_root, demo_spec):
    for path in glob.glob(osp.join(demo_root, 'gtFine', '*', '*',
                                   '*_gtFine_labelTrainIds.png')):
        train = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        ids = cv2.imread(
            path.replace('labelTrainIds', 'labelIds'), cv2.IMREAD_UNCHANGED)
        colour = cv2.imread(path.replace('labelTrainIds', 'color'))
        assert train.shape == demo_spec['size'] and train.dtype == np.uint8
        assert train.max() < 19
        for t in np.unique(train):
            label = trainId2label[int(t)]
            assert (ids[train == t] == label.id).all()
            assert (colour[train == t] == label.color[::-1]).all()


def test_deterministic_for_a_seed(tmp_path, make_demo, demo_root, demo_spec):
    again = str(tmp_path / 'again')
    make_demo.make_demo_data(again,
                             make_demo.DemoDataSettings(seed=0, **demo_spec))
    assert _files(again) == _files(demo_root)
    for rel in _files(demo_root):
        with open(osp.join(again, rel), 'rb') as a, \
                open(osp.join(demo_root, rel), 'rb') as b:
            assert a.read() == b.read(), rel
    other = str(tmp_path / 'other')
    make_demo.make_demo_data(
        other,
        make_demo.DemoDataSettings(
            size=demo_spec['size'], seed=1, num_train=1, num_val=0,
            num_test=0))
    rel = 'gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png'
    with open(osp.join(other, rel), 'rb') as a, \
            open(osp.join(demo_root, rel), 'rb') as b:
        assert a.read() != b.read()


def test_key_frame_hides_the_class_evidence(make_demo):
    """Hidden key-frame pixels are grey whatever their class (every class
    colour is far from grey), the memory frames are clean, and the hidden
    part is within the requested range."""
    colours = make_demo.class_colours()
    spread = colours.max(1) - colours.min(1)
    assert spread.min() >= 100
    dists = np.abs(colours[:, None] - colours[None]).max(-1)
    assert dists[~np.eye(19, dtype=bool)].min() >= 100
    settings = make_demo.DemoDataSettings(
        size=(128, 256), hidden_range=(0.3, 0.5), noise_std=6.0)
    fractions = []
    for i in range(6):
        rng = np.random.default_rng([3, 0, i])
        snippet = make_demo.SnippetRenderer(rng, settings)
        hidden = snippet.hidden > 0
        fractions.append(hidden.mean())
        key, label = snippet.frame(make_demo.KEY_FRAME)
        grey = key.astype(int).max(-1) - key.astype(int).min(-1)
        # noise (std 6) only: far below the 100 of any class colour
        assert np.percentile(grey[hidden], 99) < 50
        assert np.median(grey[~hidden]) > 80
        # the labels under the degradation keep the true classes: those
        # the same frame shows without the degradation (read by the nearest
        # class colour, which the texture and noise blur a little)
        kinds, snippet.hidden = snippet.hidden, np.zeros_like(snippet.hidden)
        clean, clean_label = snippet.frame(make_demo.KEY_FRAME)
        snippet.hidden = kinds
        assert np.array_equal(label, clean_label)
        assert 255 not in label[hidden]
        clean = clean.astype(np.float32)
        nearest = ((clean[..., None, :] - colours)**2).sum(-1).argmin(-1)
        assert (nearest[hidden] == label[hidden]).mean() > 0.8
        # several classes hidden per snippet: the memory has work to do
        assert len(np.unique(label[hidden])) >= 2
        assert not set(snippet.extra_blocks) & set(range(10, 20))
        for t in range(16, 19):
            img, _ = snippet.frame(t)
            spread_t = img.astype(int).max(-1) - img.astype(int).min(-1)
            assert np.median(spread_t) > 80
    assert 0.3 <= min(fractions) and max(fractions) <= 0.56


def test_hide_whole_regions(tmp_path, make_demo):
    settings = make_demo.DemoDataSettings(
        size=(128, 256), hidden_range=(0.3, 0.5), noise_std=6.0,
        hide='regions')
    for i in range(4):
        rng = np.random.default_rng([4, 0, i])
        snippet = make_demo.SnippetRenderer(rng, settings)
        hidden = snippet.hidden > 0
        assert 0.3 <= hidden.mean() <= 0.56
        seg = snippet.segments(make_demo.KEY_FRAME)
        for region in np.unique(seg):
            assert hidden[seg == region].all() or \
                not hidden[seg == region].any()
    summary = make_demo.make_demo_data(
        str(tmp_path),
        make_demo.DemoDataSettings(
            size=(32, 64), num_train=1, num_val=0, num_test=0,
            hide='regions'))
    assert summary['hide'] == 'regions'
    with pytest.raises(ValueError, match='hide'):
        make_demo.DemoDataSettings(hide='everything')


def test_smooth_motion(make_demo):
    """Consecutive frames show the same scene shifted by a few pixels."""
    rng = np.random.default_rng([5, 0, 0])
    snippet = make_demo.SnippetRenderer(
        rng, make_demo.DemoDataSettings(size=(128, 256)))
    steps = np.abs(np.diff(snippet.pan, axis=0)).max()
    assert 1 <= steps <= 5
    _, a = snippet.frame(10)
    _, b = snippet.frame(11)
    assert 0.5 < (a == b).mean() < 1.0


def test_bad_arguments(tmp_path, make_demo):
    settings = make_demo.DemoDataSettings
    with pytest.raises(ValueError, match='size'):
        settings(size=(8, 8))
    with pytest.raises(ValueError, match='frames'):
        settings(frames='some')
    with pytest.raises(ValueError, match='hidden_range'):
        settings(hidden_range=(0.6, 0.2))
    with pytest.raises(ValueError, match='num_val'):
        settings(num_val=-1)
    with pytest.raises(ValueError, match='seed'):
        settings(seed=1.5)
    with pytest.raises(TypeError, match='DemoDataSettings'):
        make_demo.make_demo_data(str(tmp_path), dict(size=(32, 64)))
    assert not glob.glob(osp.join(str(tmp_path), '*'))


def test_cli(tmp_path, capsys):
    out = str(tmp_path / 'cli')
    make_demo_tool().main([
        '--out', out, '--size', '32', '64', '--num-train', '2', '--num-val',
        '1', '--num-test', '0', '--frames', 'memory', '--json',
        str(tmp_path / 'summary.json')
    ])
    text = capsys.readouterr().out
    assert 'Wrote synthetic demo data' in text and 'hidden' in text
    summary = json.load(open(tmp_path / 'summary.json'))
    assert summary['splits']['train']['files'] == 2 * (10 + 1 + 3)
    assert not [
        p for d in glob.glob(osp.join(out, '**'), recursive=True)
        for p in stale_temp_files(d)
    ]
    meta = json.load(open(osp.join(out, 'meta.json')))
    meta.pop('seconds'), summary.pop('seconds')
    assert meta == summary
    # the command line recorded in README.txt; bad settings are named
    assert 'Generated with: python tools/make_demo_data.py --out' in open(
        osp.join(out, 'README.txt')).read()
    with pytest.raises(SystemExit, match='num_val must be an integer >= 0'):
        make_demo_tool().main(['--out', out, '--num-val', '-1'])


@pytest.mark.slow
def test_default_demo_data_full_epoch(tmp_path, make_demo):
    """`python tools/make_demo_data.py --out ...` with the defaults, then a
    whole epoch of the demo train pipeline and the val split."""
    from mmengine.config import Config
    from mmseg.registry import DATASETS
    out = str(tmp_path / 'demo')
    make_demo_tool().main(['--out', out])
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs', '_base_', 'datasets', 'demo-seq.py'))
    for loader, n in ((cfg.train_dataloader, 60), (cfg.val_dataloader, 20)):
        loader.dataset.data_root = out
        dataset = DATASETS.build(loader.dataset)
        assert len(dataset) == n
        for i in range(n):
            sample = dataset[i]
            assert sample['inputs'].shape == (4, 3, 128, 256)
            assert sample['data_samples'].gt_sem_seg.shape == (128, 256)
