"""Export of the per-frame step (tools/deploy/export.py: the exported
program and the AOTInductor package) and streaming from it
(tools/deploy/stream_exported.py), for the demo LMA-ERFNet with fewer blocks
(helpers.demo_step)."""
import json
import re

import numpy as np
import pytest
import torch

from helpers.demo_step import (CONFIG, H, W, demo_step_model, eager_stream,
                               small_model_options)
from helpers.tools import run_tool, run_tool_in_process
from lma_mmseg.apis.export import (ExportedStreamer, example_memory, load_step,
                                   zero_memory)


@pytest.fixture(scope='module')
def model():
    return demo_step_model()


@pytest.fixture(scope='module')
def exported(model, tmp_path_factory):
    """The model exported once by tools/deploy/export.py (program and
    AOTInductor package), shared by the tests below. The tool runs in this
    process: what crosses the process boundary is the exported program, and
    tools/deploy/stream_exported.py (below) loads it in a fresh one."""
    tmp = tmp_path_factory.mktemp('export')
    ckpt = tmp / 'lma.pth'
    torch.save(dict(state_dict=model.state_dict()), ckpt)
    out = tmp / 'export'
    proc = run_tool_in_process(
        'deploy/export.py', CONFIG, ckpt, '--shape', H, W, '--out', out,
        '--aoti', '--cfg-options', *[
            f'{k}={v}'.replace(' ', '')
            for k, v in small_model_options().items()
        ])
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the paths: the JSON object on the lines after mmengine's log
    start = re.search(r'^\{', proc.stdout, re.MULTILINE).start()
    return out, json.loads(proc.stdout[start:])


@pytest.mark.slow
def test_exported_step_equals_eager(model, exported):
    out, paths = exported
    assert sorted(paths) == [
        'aoti', 'info', 'memory_length', 'memory_offsets',
        'num_memory_tensors', 'program'
    ]
    assert (out / 'step.pt2').is_file() and (out / 'step.json').is_file()
    assert (out / 'step_aoti.pt2').is_file()
    info = json.loads(open(paths['info']).read())
    assert info['memory_length'] == model.memory_length == 3
    assert info['memory_offsets'] == paths['memory_offsets'] == [-6, -4, -2]
    assert info['input_shape'] == [1, 3, H, W]
    # keys, values (the 6 frames the strided memory keeps, at 1/8) and the
    # count of frames seen
    assert info['memory_shapes'] == [[1, 6, 16, 8, 16], [1, 6, 64, 8, 16],
                                     []]
    frames = torch.randn(8, 1, 3, H, W)
    expected = eager_stream(model, frames)
    # a stream from its first frame (an empty memory, as the eager step
    # starts): equal to the eager step on every frame
    memory, _ = example_memory(model, frames[0])
    assert [list(t.shape) for t in memory] == info['memory_shapes']
    for path, aoti in ((paths['program'], False), (paths['aoti'], True)):
        program = load_step(path, aoti=aoti)
        flat = list(memory)
        eager_memory = None
        with torch.no_grad():
            for t, frame in enumerate(frames):
                logits, *flat = program(frame, *flat)
                _, eager_memory = model.step(frame, eager_memory)
                torch.testing.assert_close(
                    logits, expected[t], atol=1e-4, rtol=0)
                torch.testing.assert_close(
                    flat[0], eager_memory.keys, atol=1e-4, rtol=0)
                assert int(flat[2]) == int(eager_memory.count) == \
                    min(t + 1, 6)
    # ExportedStreamer starts every stream from zeros (step.json's shapes)
    streamer = ExportedStreamer(load_step(paths['program']),
                                zero_memory(info))
    for _ in range(2):
        with torch.no_grad():
            got = [streamer(frame) for frame in frames]
        for t in range(len(frames)):
            torch.testing.assert_close(
                got[t], expected[t], atol=1e-4, rtol=0)
        streamer.reset()


@pytest.mark.slow
def test_stream_exported_tool(exported, tmp_path):
    out, _ = exported
    import cv2
    frames_dir = tmp_path / 'frames'
    frames_dir.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(
            str(frames_dir / f'f{i:03d}.png'),
            rng.integers(0, 256, (H * 2, W * 2, 3), dtype=np.uint8))
    preds = tmp_path / 'preds'
    proc = run_tool('deploy/stream_exported.py', out, frames_dir, '--out',
                    preds)
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in preds.iterdir())
    assert names == [f'f{i:03d}.png' for i in range(4)]
    label = cv2.imread(str(preds / 'f003.png'), cv2.IMREAD_UNCHANGED)
    assert label.shape == (H, W) and label.max() < 19
    # bad input names what is wrong (in this process: the check fails
    # before any work)
    proc = run_tool_in_process('deploy/stream_exported.py',
                               tmp_path / 'nowhere', frames_dir, '--out',
                               preds)
    assert proc.returncode == 2 and 'step.json' in proc.stderr
