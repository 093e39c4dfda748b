"""Shared pieces of the hostile-input tests: tiny Cityscapes-sequence
archives and the command lines loaded as modules (run in-process with their
real entry points)."""
import importlib.util
import io
import json
import os
import os.path as osp
import zipfile

import numpy as np
from PIL import Image

from helpers import ROOT

H, W = 8, 16
CITY, KEY = 'aachen', 'aachen_000000_000019'
SEQ = 'leftImg8bit_sequence/train/aachen'
GT = 'gtFine/train/aachen'


def png_bytes(shape, seed=0) -> bytes:
    """A random uint8 PNG of ``shape`` ((H, W) or (H, W, 3))."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
        buf, format='PNG')
    return buf.getvalue()


def polygons(width=W, height=H) -> bytes:
    objects = [dict(label='road', polygon=[[0, 0], [W, 0], [W, H], [0, H]])]
    return json.dumps(dict(imgWidth=width, imgHeight=height,
                           objects=objects)).encode()


def snippet_members() -> dict:
    """The members one annotated frame needs with offsets ``(-1, )``: its
    frame and the one before, and its gtFine files."""
    return {
        f'{SEQ}/aachen_000000_000018_leftImg8bit.png': png_bytes((H, W, 3)),
        f'{SEQ}/{KEY}_leftImg8bit.png': png_bytes((H, W, 3), 1),
        f'{GT}/{KEY}_gtFine_polygons.json': polygons(),
        f'{GT}/{KEY}_gtFine_labelIds.png': png_bytes((H, W), 2),
    }


def write_zip(path, members: dict) -> str:
    """A zip archive of ``members`` (name -> bytes), names kept as given."""
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return str(path)


def files_under(root) -> dict:
    """relative path -> bytes of every file under ``root``."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = osp.join(folder, name)
            with open(path, 'rb') as f:
                out[osp.relpath(path, root)] = f.read()
    return out


def load_tool(rel: str):
    """``tools/<rel>`` as a module (its ``main``/``cli`` run in-process)."""
    path = osp.join(ROOT, 'tools', rel)
    name = 'tool_' + rel.replace('/', '_').replace('.py', '')
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
