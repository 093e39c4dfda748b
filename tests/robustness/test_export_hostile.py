"""Exported programs as a hostile user edits them: loading never unpickles
anything but tensors, and ``step.json`` is checked against the program (one
test per case of the README's "Bad input" table)."""
import io
import json
import shutil
import zipfile

import cv2
import numpy as np
import pytest
import torch
from hostile_inputs import load_tool

from lma_mmseg.apis.archive import ArchiveError, StepInfoError, check_archive
from lma_mmseg.apis.export import (ExportedStreamer, load_step, load_step_info,
                                   zero_memory)
from lma_mmseg.utils import run_main


class Marker:
    """Unpickled, it creates (opens for writing) the file ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, 'w'))


def members_of(path):
    with zipfile.ZipFile(path) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


def rewrite(path, members):
    with zipfile.ZipFile(path, 'w') as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def member(members, suffix):
    found = [n for n in members if n.endswith(suffix)]
    assert len(found) == 1, (suffix, list(members))
    return found[0]


def frames_folder(tmp_path, num=2):
    folder = tmp_path / 'frames'
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(num):
        cv2.imwrite(
            str(folder / f'f{i:03d}.png'),
            rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    return folder


@pytest.fixture(scope='module')
def stream_tool():
    return load_tool('deploy/stream_exported.py')


def stream(stream_tool, capsys, *args):
    status = run_main(
        stream_tool.main, [str(a) for a in args], prog='stream_exported.py')
    _, err = capsys.readouterr()
    return status, err


def one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        'stream_exported.py: error: '), err
    return lines[0]


def test_export_holds_no_pickled_sample_inputs(exported):
    program = exported['folder'] / 'step.pt2'
    members = members_of(program)
    assert members[member(members, '/data/sample_inputs/model.pt')] == b''
    assert check_archive(str(program)) == {}  # no pickle at all
    info = load_step_info(str(exported['folder']))
    streamer = ExportedStreamer(load_step(str(program)), zero_memory(info))
    with torch.no_grad():
        logits = streamer(torch.randn(1, 3, 32, 32))
    assert logits.shape == (1, 5, 32, 32) and torch.isfinite(logits).all()


def _evil_torch_save(marker):
    buf = io.BytesIO()
    torch.save(((Marker(marker), ), {}), buf)
    return buf.getvalue()


@pytest.mark.parametrize(
    'where', ['sample_inputs', 'sample_inputs_legacy', 'pickled_weight'])
def test_tampered_export_is_refused_and_runs_nothing(
        exported, tmp_path, capsys, stream_tool, where):
    marker = tmp_path / 'MARKER'
    folder = tmp_path / 'export'
    shutil.copytree(exported['folder'], folder)
    program = folder / 'step.pt2'
    members = members_of(program)
    if where == 'sample_inputs':
        # torch.save's format: torch's loader retries without weights_only
        name = member(members, '/data/sample_inputs/model.pt')
        members[name] = _evil_torch_save(marker)
    elif where == 'sample_inputs_legacy':
        # a bare pickle: torch.load reads it as its legacy format
        import pickle
        name = member(members, '/data/sample_inputs/model.pt')
        members[name] = pickle.dumps(((Marker(marker), ), {}), protocol=2)
    else:
        # a weight declared pickled: loaded with weights_only=False
        config = member(members, '/data/weights/model_weights_config.json')
        weights = json.loads(members[config])
        first = next(iter(weights['config'].values()))
        first['use_pickle'] = True
        members[config] = json.dumps(weights).encode()
        name = member(members, '/data/weights/' + first['path_name'])
        members[name] = _evil_torch_save(marker)
    rewrite(program, members)

    frames = frames_folder(tmp_path)
    status, err = stream(
        stream_tool, capsys, folder, frames, '--out', tmp_path / 'preds')
    assert status == 2
    line = one_error_line(err)
    assert f'{program}:{name}' in line and 'refused' in line
    with pytest.raises(ArchiveError, match='refused'):
        load_step(str(program))
    assert not marker.exists()
    assert not list((tmp_path / 'preds').glob('*.png'))
    # the trap was live: torch's fallback (weights_only=False) springs it
    try:
        loaded = torch.load(io.BytesIO(members[name]), weights_only=False)
        loaded[0][0].close()
    except Exception:  # the legacy format fails after running the pickle
        pass
    assert marker.exists()


@pytest.mark.parametrize(
    'key,value,expected', [
        ('input_shape', [1, 3, 32], 'input_shape must have 4 sizes'),
        (
            'input_shape', [1, 3, 64, 64
                            ], 'differ from the inputs of the program'),
        ('mean', [0.5] * 7, 'mean must be 3 finite numbers'),
        ('std', [0.0, 0.0, 0.0], 'std must be 3 positive finite numbers'),
        ('memory_shapes', 'negative', 'must be a list of positive sizes'),
        ('memory_offsets', [-1, -1, -3], 'memory_offsets must be distinct'),
        ('num_classes', 0, 'num_classes must be a positive int'),
    ])
def test_edited_step_json_is_refused_naming_the_key(
        exported, tmp_path, capsys, stream_tool, key, value, expected):
    folder = tmp_path / 'export'
    shutil.copytree(exported['folder'], folder)
    info_file = folder / 'step.json'
    info = json.loads(info_file.read_text())
    if value == 'negative':
        value = [list(s) for s in info['memory_shapes']]
        value[0][2] = -value[0][2]
    info[key] = value
    info_file.write_text(json.dumps(info))
    with pytest.raises(StepInfoError) as excinfo:
        load_step_info(str(folder))
    msg = str(excinfo.value)
    assert msg.startswith(f'{info_file}: ') and key in msg and expected in msg
    status, err = stream(
        stream_tool, capsys, folder, frames_folder(tmp_path), '--out',
        tmp_path / 'preds')
    assert status == 2 and expected in one_error_line(err)
    assert not list((tmp_path / 'preds').glob('*.png'))
