"""Cityscapes-sequence preparation from synthetic archives in the official
layout (made here): only the needed members are extracted, labelTrainIds as
cityscapesscripts makes them, a killed run finishes on rerun, and broken or
incomplete archives are named."""
import io
import json
import os
import os.path as osp
import shutil
import signal
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
from PIL import Image

from helpers.tools import run_tool_in_process
from lma_mmseg.datasets.prep import cityscapes_seq as prep
from lma_mmseg.fileio import is_temp_file

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def run_converter(*args):
    """The converter's command line, in this process (the killed run is
    the test of a process boundary here)."""
    return run_tool_in_process('dataset_converters/cityscapes_seq.py',
                               *args)


H, W = 24, 48
#: split -> annotated frames (city, seq, frame)
KEYS = {
    'train': [('aachen', 0, 19), ('aachen', 1, 19), ('bochum', 0, 319)],
    'val': [('frankfurt', 0, 294)],
    'test': [('berlin', 0, 19)],
}


def _stem(city, seq, frame):
    return f'{city}_{seq:06d}_{frame:06d}'


def _png(rng, shape):
    buf = io.BytesIO()
    Image.fromarray(rng.randint(0, 256, shape).astype(np.uint8)).save(
        buf, format='PNG')
    return buf.getvalue()


def _polygons(rng):
    objects = [
        dict(label='road', polygon=[[0, H], [W, H], [W, H // 2], [0, H // 2]]),
        dict(label='sky', polygon=[[0, 0], [W, 0], [W, 6], [0, 6]]),
        dict(label='cargroup', polygon=[[5, 20], [20, 12], [30, 22]]),
        dict(label='person', polygon=[[30, 8], [36, 8], [36, 20], [30, 20]]),
        # license plates have id -1: not drawn
        dict(label='license plate', polygon=[[10, 10], [14, 10], [14, 12]]),
        dict(label='car', deleted=1, polygon=[[0, 0], [W, 0], [W, H]]),
        dict(label='ego vehicle', polygon=[[0, H - 3], [W, H - 3], [W, H]]),
    ]
    x = int(rng.randint(0, W - 10))
    objects.append(
        dict(label='pole', polygon=[[x, 0], [x + 3, 0], [x + 3, H], [x, H]]))
    return json.dumps(dict(imgHeight=H, imgWidth=W, objects=objects))


def make_archives(folder, drop=(), seed=0):
    """Write the two official zips; ``drop``: member names to leave out.

    Returns:
        dict: zip paths and the member bytes by name.
    """
    rng = np.random.RandomState(seed)
    members = {}
    for split, keys in KEYS.items():
        for city, seq, frame in keys:
            for f in range(frame - 19, frame + 11):  # the 30-frame snippet
                members[f'leftImg8bit_sequence/{split}/{city}/'
                        f'{_stem(city, seq, f)}_leftImg8bit.png'] = _png(
                            rng, (H, W, 3))
            gt = f'gtFine/{split}/{city}/{_stem(city, seq, frame)}_gtFine_'
            members[gt + 'polygons.json'] = _polygons(rng).encode()
            members[gt + 'labelIds.png'] = _png(rng, (H, W))
            members[gt + 'color.png'] = _png(rng, (H, W, 3))
            members[gt + 'instanceIds.png'] = _png(rng, (H, W))
    paths = {}
    for zname, top in (('leftImg8bit_sequence_trainvaltest.zip',
                        'leftImg8bit_sequence/'),
                       ('gtFine_trainvaltest.zip', 'gtFine/')):
        path = osp.join(folder, zname)
        with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as zf:
            zf.writestr('license.txt', b'synthetic')
            zf.writestr('README', b'synthetic')
            for name, data in sorted(members.items()):
                if name.startswith(top) and name not in drop:
                    zf.writestr(name, data)
        paths[zname] = path
    return dict(paths=paths, members=members)


def expected_members(splits, offsets):
    names = set()
    for split in splits:
        for city, seq, frame in KEYS[split]:
            for o in sorted(set(offsets) | {0}):
                names.add(f'leftImg8bit_sequence/{split}/{city}/'
                          f'{_stem(city, seq, frame + o)}_leftImg8bit.png')
            gt = f'gtFine/{split}/{city}/{_stem(city, seq, frame)}_gtFine_'
            names.update(gt + k for k in ('polygons.json', 'labelIds.png',
                                          'color.png', 'instanceIds.png'))
    return names


def tree(root):
    out = set()
    for folder, _, files in os.walk(root):
        for name in files:
            out.add(osp.relpath(osp.join(folder, name), root).replace(
                os.sep, '/'))
    return out


@pytest.fixture(scope='module')
def archives(tmp_path_factory):
    folder = tmp_path_factory.mktemp('archives')
    return make_archives(str(folder))


def test_only_needed_members_then_label_train_ids(archives, tmp_path,
                                                  monkeypatch):
    out = str(tmp_path / 'cityscapes')
    offsets = {'train': [-3, -2, -1], 'val': [-3, -2, -1]}
    summary = prep.prepare(list(archives['paths'].values()), out, offsets,
                           workers=2, progress=False)
    expected = expected_members(['train', 'val'], [-3, -2, -1])
    # 4 frames of each of the 4 annotated frames + 4 gtFine files each
    assert len(expected) == 4 * 4 + 4 * 4
    assert summary['members'] == summary['extracted'] == len(expected)
    assert summary['skipped'] == 0
    label_files = {n.replace('_polygons.json', '_labelTrainIds.png')
                   for n in expected if n.endswith('_polygons.json')}
    assert tree(out) == expected | label_files
    for name in expected:
        with open(osp.join(out, name), 'rb') as f:
            assert f.read() == archives['members'][name], name
    assert summary['bytes_written'] == sum(
        len(archives['members'][n]) for n in expected)
    assert summary['archive_bytes'] == sum(
        osp.getsize(p) for p in archives['paths'].values())
    assert summary['bytes_written'] < summary['archive_bytes'] / 3
    assert summary['label_train_ids'] == dict(created=4, existing=0)

    # cityscapesscripts' own createTrainIdLabelImgs on a copy of gtFine
    ref = tmp_path / 'reference'
    shutil.copytree(osp.join(out, 'gtFine'), ref / 'gtFine',
                    ignore=shutil.ignore_patterns('*_labelTrainIds.png'))
    monkeypatch.setenv('CITYSCAPES_DATASET', str(ref))
    from cityscapesscripts.preparation import createTrainIdLabelImgs
    createTrainIdLabelImgs.main()
    for name in label_files:
        ours = np.array(Image.open(osp.join(out, name)))
        theirs = np.array(Image.open(ref / name))
        assert ours.shape == (H, W) and ours.dtype == np.uint8
        np.testing.assert_array_equal(ours, theirs)
        # several classes drawn, ego vehicle (trainId 255) among them
        assert {0, 10, 11, 13, 255} <= set(np.unique(ours).tolist())

    # a rerun has nothing left to do
    again = prep.prepare(list(archives['paths'].values()), out, offsets,
                         progress=False)
    assert again['extracted'] == 0 and again['skipped'] == len(expected)
    assert again['label_train_ids'] == dict(created=0, existing=4)


DRIVER = textwrap.dedent("""
    import os, signal, sys
    from lma_mmseg.datasets.prep import cityscapes_seq as prep
    calls = [0]
    real = prep._copy_stream

    def copy_then_die(src, dst, length=1 << 20):
        calls[0] += 1
        if calls[0] == 5:  # half of the 5th file, then SIGKILL
            data = src.read()
            dst.write(data[:len(data) // 2])
            dst.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst, length)

    prep._copy_stream = copy_then_die
    prep.prepare(sys.argv[1:3], sys.argv[3], {'train': [-3, -2, -1]},
                 progress=False)
""")


def test_killed_run_is_finished_by_a_rerun(archives, tmp_path):
    out = str(tmp_path / 'cityscapes')
    driver = tmp_path / 'driver.py'
    driver.write_text(DRIVER)
    proc = subprocess.run(
        [sys.executable, str(driver), *archives['paths'].values(), out],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    partial = tree(out)
    temps = [n for n in partial if is_temp_file(n)]
    assert len(temps) == 1
    # the killed run's lock file stays; the system released its lock, so a
    # rerun takes it over
    assert prep.LOCK_NAME in partial
    complete = partial - set(temps) - {prep.LOCK_NAME}
    assert len(complete) == 4
    for name in complete:  # what is there under a final name is complete
        with open(osp.join(out, name), 'rb') as f:
            assert f.read() == archives['members'][name]

    result = run_converter(*archives['paths'].values(), '--out', out,
                           '--splits', 'train', '--offsets', '-3', '-2', '-1')
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-2000:]
    assert 'removed 1 partial file(s)' in log
    assert 'already complete' in log and 'GiB of archives' in log
    expected = expected_members(['train'], [-3, -2, -1])
    labels = {n.replace('_polygons.json', '_labelTrainIds.png')
              for n in expected if n.endswith('_polygons.json')}
    assert tree(out) == expected | labels
    for name in expected:
        with open(osp.join(out, name), 'rb') as f:
            assert f.read() == archives['members'][name], name


def test_corrupt_archive_and_corrupt_member_are_named(archives, tmp_path):
    bad = tmp_path / 'leftImg8bit_sequence_trainvaltest.zip'
    bad.write_bytes(b'PK\x03\x04 this is not a zip archive')
    with pytest.raises(prep.PrepError, match=str(bad)):
        prep.open_sources([str(bad)])
    proc = run_converter(bad, archives['paths']['gtFine_trainvaltest.zip'],
                         '--out', tmp_path / 'o')
    assert proc.returncode == 2 and str(bad) in proc.stderr
    assert 'Traceback' not in proc.stderr

    # flip a byte inside the data of one needed member: CRC error
    src = archives['paths']['leftImg8bit_sequence_trainvaltest.zip']
    broken = tmp_path / 'broken' / osp.basename(src)
    broken.parent.mkdir()
    shutil.copy(src, broken)
    victim = ('leftImg8bit_sequence/train/aachen/'
              'aachen_000000_000017_leftImg8bit.png')
    with zipfile.ZipFile(broken) as zf:
        info = zf.getinfo(victim)
    with open(broken, 'r+b') as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(f.read(4), '<u2')
        pos = info.header_offset + 30 + int(name_len) + int(extra_len) + 40
        f.seek(pos)
        byte = f.read(1)
        f.seek(pos)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(prep.PrepError) as err:
        prep.prepare([str(broken), archives['paths'][
            'gtFine_trainvaltest.zip']], str(tmp_path / 'o2'),
                     {'train': [-3, -2, -1]}, progress=False)
    assert victim in str(err.value) and str(broken) in str(err.value)
    assert not osp.exists(tmp_path / 'o2' / victim)
    assert not [n for n in tree(tmp_path / 'o2') if n.endswith('.tmp')]


def test_missing_member_is_named(tmp_path):
    victim = ('leftImg8bit_sequence/val/frankfurt/'
              'frankfurt_000000_000292_leftImg8bit.png')
    made = make_archives(str(tmp_path), drop={victim})
    with pytest.raises(prep.MissingMembersError) as err:
        prep.prepare(list(made['paths'].values()), str(tmp_path / 'o'),
                     {'val': [-3, -2, -1]}, progress=False)
    assert victim in str(err.value) and err.value.missing == [victim]
    assert not osp.exists(tmp_path / 'o')  # nothing written
    proc = run_converter(tmp_path, '--out', tmp_path / 'o', '--splits', 'val')
    assert proc.returncode == 2 and victim in proc.stderr
    # without gtFine no annotated frame is known
    with pytest.raises(prep.MissingMembersError, match='gtFine/val'):
        prep.prepare([made['paths']['leftImg8bit_sequence_trainvaltest.zip']],
                     str(tmp_path / 'o'), {'val': [-1]}, progress=False)


CONFIG = """
_base_ = [{base!r}]
train_dataloader = dict(dataset=dict(
    data_root={root!r}, train_offsets_sampler=dict(strides=(1, 2))))
val_dataloader = dict(dataset=dict(
    data_root={root!r}, frame_offsets=(-4, -3, -2, -1)))
test_dataloader = val_dataloader
"""


def test_config_offsets_and_check(archives, tmp_path):
    out = tmp_path / 'cityscapes'
    config = tmp_path / 'cfg.py'
    config.write_text(CONFIG.format(
        base=osp.join(ROOT, 'configs', '_base_', 'datasets',
                      'cityscapes-seq.py'), root=str(out)))
    offsets, root = prep.offsets_from_config(str(config))
    assert offsets == {'train': [-6, -4, -3, -2, -1], 'val': [-4, -3, -2, -1]}
    assert root == str(out)

    # prepared for (-3, -2, -1) only: --check names every missing frame
    prep.prepare(list(archives['paths'].values()), str(out),
                 {'train': [-3, -2, -1], 'val': [-3, -2, -1]},
                 progress=False)
    proc = run_converter('--check', '--config', config)
    assert proc.returncode == 1
    listed = set(proc.stdout.split())
    missing = {
        str(out / 'leftImg8bit_sequence' / split / city /
            f'{_stem(city, seq, frame + o)}_leftImg8bit.png')
        for split, offs in (('train', (-6, -4)), ('val', (-4, )))
        for city, seq, frame in KEYS[split] for o in offs
    }
    assert listed == missing

    # --config extracts what is missing; then --check passes
    proc = run_converter(*archives['paths'].values(), '--config', config)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run_converter('--check', '--config', config)
    assert proc.returncode == 0 and proc.stdout == ''

    # and the prepared tree loads as the config's datasets
    from mmengine.config import Config
    from mmseg.registry import DATASETS
    cfg = Config.fromfile(str(config))
    for key in ('train_dataloader', 'val_dataloader'):
        ds_cfg = cfg[key].dataset
        ds_cfg.pipeline = []
        ds = DATASETS.build(ds_cfg)
        assert len(ds) == len(KEYS[key.split('_')[0]])
