"""tools/dataset_converters/cityscapes_seq.py against hostile sources: one
test per case of the README's "Bad input" table. The tool runs in-process
through its real entry point (``cli``: one ``error:`` line, status 2)."""
import os
import os.path as osp
import socket

import numpy as np
import pytest
from hostile_inputs import (GT, KEY, SEQ, H, W, files_under, png_bytes,
                            polygons, snippet_members, write_zip)
from PIL import Image

from lma_mmseg.datasets.prep import cityscapes_seq as prep
from lma_mmseg.fileio import folder_lock, remove_stale_temp_files

FRAME_18 = f'{SEQ}/aachen_000000_000018_leftImg8bit.png'
ARGS = ['--splits', 'train', '--offsets', '-1']


def run(converter, capsys, *args):
    """Exit status, stdout and stderr of one in-process tool run."""
    status = converter.cli([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        'cityscapes_seq.py: error: '), err
    return lines[0]


def test_member_outside_out_is_refused_and_nothing_outside_is_touched(
        tmp_path, converter, capsys):
    outside = tmp_path / 'outside'
    outside.mkdir()
    (outside / 'F').write_bytes(b'precious')
    # what a stale temporary file of the atomic writer looks like
    (outside / '.F.k2j4.tmp').write_bytes(b'another program\'s file')
    before = files_under(tmp_path)
    escape = f'{GT}/../../../../outside/F'
    members = dict(snippet_members(), **{escape: b'evil'})
    archive = write_zip(tmp_path / 'gtFine_trainvaltest.zip', members)
    before[osp.basename(archive)] = open(archive, 'rb').read()
    out = tmp_path / 'out'
    for _ in range(2):  # a rerun neither
        status, _, err = run(converter, capsys, archive, '--out', out, *ARGS)
        assert status == 2
        line = one_error_line(err)
        assert escape in line and 'outside the output folder' in line
        assert str(outside / 'F') in line
        # nothing appeared, changed or vanished outside --out; nothing in it
        assert files_under(tmp_path) == before
        assert not out.exists()


def test_link_out_of_extracted_tree_is_not_followed(
        tmp_path, converter, capsys):
    secret = tmp_path / 'secret.png'
    secret.write_bytes(png_bytes((H, W, 3), 7))  # a valid frame, even
    src = tmp_path / 'extracted'
    for name, data in snippet_members().items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name == FRAME_18:
            path.symlink_to(secret)
        else:
            path.write_bytes(data)
    out = tmp_path / 'out'
    status, _, err = run(converter, capsys, src, '--out', out, *ARGS)
    assert status == 2
    line = one_error_line(err)
    assert str(src / FRAME_18) in line and str(secret) in line
    assert 'not followed' in line
    assert not out.exists()
    assert secret.read_bytes() == png_bytes((H, W, 3), 7)


def test_second_run_into_one_out_is_refused_naming_the_holder(
        tmp_path, converter, capsys):
    archive = write_zip(tmp_path / 'a.zip', snippet_members())
    out = tmp_path / 'out'
    with folder_lock(out, prep.LOCK_NAME, command='the first run'):
        status, _, err = run(
            converter, capsys, archive, '--out', out, '--no-label-train-ids',
            *ARGS)
        assert status == 2
        line = one_error_line(err)
        assert f'process {os.getpid()} on host {socket.gethostname()}' \
            in line and 'the first run' in line
        assert sorted(os.listdir(out)) == [prep.LOCK_NAME]
    # once the first run is done, the second one goes through
    status, _, err = run(
        converter, capsys, archive, '--out', out, '--no-label-train-ids',
        *ARGS)
    assert status == 0, err
    assert sorted(files_under(out)) == sorted(n for n in snippet_members())


def test_temp_file_removed_by_another_run_fails_the_run(
        tmp_path, converter, capsys, monkeypatch):
    """Another run's clean-up removes this run's temporary file: the
    writer raises, the tool fails, no frame is silently missing."""
    archive = write_zip(tmp_path / 'a.zip', snippet_members())
    out = tmp_path / 'out'
    copy = prep._copy_stream

    def copy_then_lose_the_temp(src, dst, length=1 << 20):
        written = copy(src, dst, length)
        if osp.basename(dst.name).startswith('.aachen_000000_000018'):
            removed = remove_stale_temp_files(osp.dirname(dst.name))
            assert removed == [dst.name]
        return written

    monkeypatch.setattr(prep, '_copy_stream', copy_then_lose_the_temp)
    status, _, err = run(
        converter, capsys, archive, '--out', out, '--no-label-train-ids',
        *ARGS)
    assert status == 2
    line = one_error_line(err)
    assert str(out / FRAME_18) in line and 'vanished' in line
    assert not (out / FRAME_18).exists()


@pytest.mark.parametrize(
    'content', [b'', b'a text file, not a PNG\n'], ids=['empty', 'text'])
def test_member_that_is_not_an_image_is_refused(
        tmp_path, converter, capsys, content):
    members = dict(snippet_members(), **{FRAME_18: content})
    archive = write_zip(tmp_path / 'a.zip', members)
    out = tmp_path / 'out'
    status, _, err = run(
        converter, capsys, archive, '--out', out, '--no-label-train-ids',
        *ARGS)
    assert status == 2
    line = one_error_line(err)
    assert f'member {FRAME_18} of {archive}' in line
    assert 'not a decodable PNG' in line
    assert not (out / FRAME_18).exists()
    assert not [n for n in files_under(tmp_path) if '.tmp' in n]


def test_check_decodes_every_file_with_its_size(tmp_path, converter, capsys):
    archive = write_zip(tmp_path / 'a.zip', snippet_members())
    out = tmp_path / 'out'
    status, _, err = run(converter, capsys, archive, '--out', out, *ARGS)
    assert status == 0, err
    status, listed, _ = run(converter, capsys, '--check', '--out', out, *ARGS)
    assert status == 0 and listed == ''
    # a frame that does not decode, a label of another size
    (out / FRAME_18).write_text('not an image')
    label = out / GT / f'{KEY}_gtFine_labelTrainIds.png'
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(label)
    status, listed, _ = run(converter, capsys, '--check', '--out', out, *ARGS)
    assert status == 1
    lines = sorted(listed.splitlines())
    assert len(lines) == 2, lines
    assert lines[0].startswith(
        f'{out / GT / KEY}_gtFine_labelTrainIds.png '
        f'(4x4, expected {W}x{H}')
    assert lines[1].startswith(f'{out / FRAME_18} (') and \
        'not a decodable PNG' in lines[1]


def test_polygons_claiming_another_size_than_the_frame_are_refused(
        tmp_path, converter, capsys):
    name = f'{GT}/{KEY}_gtFine_polygons.json'
    members = dict(snippet_members(), **{name: polygons(14000, 14000)})
    archive = write_zip(tmp_path / 'a.zip', members)
    out = tmp_path / 'out'
    status, _, err = run(converter, capsys, archive, '--out', out, *ARGS)
    assert status == 2
    line = one_error_line(err)
    assert f'member {name}' in line and '14000x14000' in line
    assert f'is {W}x{H}' in line and not (out / name).exists()
    # a tree that holds such a file already: no label image is drawn
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    (out / name).write_bytes(polygons(14000, 14000))
    with pytest.raises(ValueError) as excinfo:
        prep.create_label_train_ids(
            str(out), ['train'], workers=1, progress=False)
    msg = str(excinfo.value)
    assert str(out / name) in msg and '14000x14000' in msg
    assert str(out / FRAME_18).replace('000018', '000019') in msg
    assert not (out / GT / f'{KEY}_gtFine_labelTrainIds.png').exists()
