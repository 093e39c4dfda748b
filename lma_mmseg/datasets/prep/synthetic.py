# Copyright (c) lma_mmseg contributors. All rights reserved.
"""A small synthetic video segmentation dataset in the Cityscapes layout.

The data is a synthetic benchmark for the temporal memory mechanism, not
Cityscapes. Every snippet is a random layout of class regions (Voronoi cells
of a scene wider than the frame, plus a few moving objects) that pans
smoothly across 30 frames. Class evidence is the region colour (19 well
separated colours, one per Cityscapes training class); every region also
carries a class-independent texture (stripes/checks/dots, drawn at random per
region) that moves with it. On the annotated frame (index 19) large parts of
the scene (30-50 % of the area by default) are washed out by glare or fog:
the colour, hence the class evidence, is gone there while the labels keep the
true classes. The texture survives the degradation, so a model that looks at
the previous frames can find where each hidden pixel was and read its class
from memory. A single-frame model can only guess: the default
``hide='regions'`` hides whole regions of the key frame, which leaves it
nothing to extend, while
``hide='blocks'`` (random rectangles and ellipses that cut through regions)
lets it extend a region's class from its visible part into the hidden part.
Other degradations of the annotated frame (occlusion, blur, noise, dropout)
are the classes of :mod:`lma_mmseg.datasets.prep.degradations`.

Layout written under ``out`` (as in Cityscapes)::

    leftImg8bit_sequence/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    leftImg8bit/{split}/{city}/{city}_{seq}_000019_leftImg8bit.png
    gtFine/{split}/{city}/{city}_{seq}_000019_gtFine_labelIds.png
    gtFine/{split}/{city}/{city}_{seq}_000019_gtFine_labelTrainIds.png
    gtFine/{split}/{city}/{city}_{seq}_000019_gtFine_color.png
    README.txt, meta.json

(``seq`` and ``frame`` with six digits).

The test split has no ``gtFine`` labels (format-only prediction). To keep
generation to a few seconds, the default ``frames='auto'`` writes all 30
frames only for the first snippet of every city (complete videos for
streaming demos) and frames 10..19 for the others, which is enough for memory
offsets down to -9; ``frames='all'`` writes every frame of every snippet,
``frames='memory'`` only frames 10..19.

Example::

    from lma_mmseg.datasets.prep import DemoDataSettings, make_demo_data
    make_demo_data('data/demo', DemoDataSettings(seed=0))

Every file is written atomically (:mod:`lma_mmseg.fileio`).
"""
import dataclasses
import functools
import json
import os
import os.path as osp
import time
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import labels as CS_LABELS
from cityscapesscripts.helpers.labels import trainId2label

from ...fileio import atomic_write_bytes, atomic_write_text
from .degradations import (GLARE_LEVEL, GLARE_TEXTURE, check_severity,
                           get_degradation)

__all__ = [
    'DemoDataSettings', 'SnippetRenderer', 'make_demo_data', 'class_colours',
    'texture_bank', 'NUM_FRAMES', 'KEY_FRAME', 'NUM_CLASSES', 'CLEAN_FRAMES',
    'SPLIT_CITIES', 'HIDE_MODES', 'FRAME_CHOICES'
]

NUM_FRAMES = 30
KEY_FRAME = 19
NUM_CLASSES = 19
# Frames that must stay clean where the key frame is hidden: the memory
# frames of the default offsets (-3, -2, -1) and of strided ones down to -9.
CLEAN_FRAMES = range(KEY_FRAME - 9, KEY_FRAME)
MEMORY_FRAMES = range(KEY_FRAME - 9, KEY_FRAME + 1)
SPLIT_CITIES = {
    'train': ('aachen', 'bochum', 'bremen'),
    'val': ('frankfurt', 'lindau'),
    'test': ('berlin', 'bielefeld'),
}
SPLITS = ('train', 'val', 'test')
NUM_TEXTURES = 8
TEXTURE_AMPLITUDE = 40.0
TEXTURE_TILE = 80
HIDE_MODES = ('blocks', 'regions')
FRAME_CHOICES = ('all', 'auto', 'memory')
# Radius range (px at 128 px frame height) of the extra objects of
# ``speeds``; static ones (speed 0) are small.
SPEED_OBJECT_RADII = ((4.0, 8.0), (10.0, 20.0))
MAX_SPEED = 20

README = """\
Synthetic demo data for lma_mmseg -- NOT Cityscapes.

This folder is a small synthetic benchmark for the local memory mechanism,
written by tools/make_demo_data.py in the Cityscapes video layout
(leftImg8bit_sequence/, leftImg8bit/, gtFine/; 30-frame snippets with frame
index 19 annotated; labelIds, labelTrainIds and colour labels of the 19
Cityscapes training classes). Nothing in it comes from Cityscapes and
figures measured on it say nothing about Cityscapes.

Each snippet is a random layout of class regions that pans smoothly, with a
few moving objects. A class is recognisable only by its colour; every region
also has a class-independent texture. On the annotated frame {hidden_pct}
of the pixels on average (per snippet {hidden_range}) are washed out by
glare or fog: their colour, hence their class, is hidden while the labels
keep the true classes; frames {clean_first}..{clean_last} show those places
clearly. A single-frame model can only guess the hidden classes; a model with
a memory of previous frames can recover them.

Generated with: {command}
"""


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(
        value, (int, float, np.integer, np.floating))


@dataclasses.dataclass(frozen=True)
class DemoDataSettings:
    """What :func:`make_demo_data` generates; the data is a function of
    these settings. Checked when built (a ValueError names the field).

    Args:
        size (tuple[int, int]): Frame size (H, W), each at least 32.
        seed (int): Random seed (>= 0).
        num_train, num_val, num_test (int): Snippets per split, spread over
            the split's cities.
        frames (str): ``'all'`` writes frames 0..29 of every snippet,
            ``'memory'`` only frames 10..19, ``'auto'`` frames 0..29 for the
            first snippet of each city and 10..19 for the others.
        hidden_range (tuple[float, float]): Range of the fraction of the key
            frame area hidden by glare/fog, per snippet (``lo <= hi < 1``).
        noise_std (float): Per-pixel Gaussian noise of the images.
        hide (str): Shape of the hidden area: ``'blocks'`` (random
            rectangles and ellipses, which cut through regions) or
            ``'regions'`` (a union of whole regions of the key frame, so no
            hidden region has a visible part on the key frame).
        mode (str): Degradation of the annotated frame, a name registered in
            :data:`~lma_mmseg.datasets.prep.degradations.DEGRADATIONS`. The
            default ``'glare'`` at severity 1 is the demo data.
        severity (float): Strength of the degradation in [0, 1] (0: clean
            key frames).
        speeds (tuple[float], optional): Extra objects, one per entry,
            moving through the scene at that speed (px per frame at 128 px
            frame height, relative to the scene, in [0, 20]; 0 is a small
            static object). They are part of the scene (labels included)
            and are degraded like everything else. None adds none.
    """

    size: Tuple[int, int] = (128, 256)
    seed: int = 0
    num_train: int = 60
    num_val: int = 20
    num_test: int = 10
    frames: str = 'auto'
    hidden_range: Tuple[float, float] = (0.3, 0.5)
    noise_std: float = 6.0
    hide: str = 'regions'
    mode: str = 'glare'
    severity: float = 1.0
    speeds: Optional[Tuple[float, ...]] = None

    def __post_init__(self):
        size = tuple(self.size)
        if len(size) != 2 or not all(_is_number(v) for v in size) or \
                min(size) < 32:
            raise ValueError(
                f'size must be (H, W) with H, W >= 32, got {self.size}')
        if not _is_number(self.seed) or int(self.seed) != self.seed or \
                self.seed < 0:
            raise ValueError(f'seed must be an integer >= 0, got '
                             f'{self.seed!r}')
        if self.frames not in FRAME_CHOICES:
            raise ValueError(
                f"frames must be 'all', 'auto' or 'memory', got "
                f'{self.frames!r}')
        hidden_range = tuple(self.hidden_range)
        if len(hidden_range) != 2 or not all(
                _is_number(v) for v in hidden_range) or \
                not 0 <= hidden_range[0] <= hidden_range[1] < 1:
            raise ValueError(
                'hidden_range must satisfy 0 <= lo <= hi < 1, got '
                f'{self.hidden_range}')
        if not _is_number(self.noise_std) or self.noise_std < 0:
            raise ValueError(f'noise_std must be a number >= 0, got '
                             f'{self.noise_std!r}')
        if self.hide not in HIDE_MODES:
            raise ValueError(
                f'hide must be one of {HIDE_MODES}, got {self.hide!r}')
        get_degradation(self.mode)
        severity = check_severity(self.severity)
        speeds = self.speeds
        if speeds is not None:
            speeds = tuple(speeds)
            if not all(_is_number(v) and 0 <= v <= MAX_SPEED
                       for v in speeds):
                raise ValueError(
                    f'speeds must be numbers in [0, {MAX_SPEED}] (px per '
                    f'frame at 128 px height), got {self.speeds!r}')
            speeds = tuple(float(v) for v in speeds)
        for split in SPLITS:
            n = getattr(self, f'num_{split}')
            if not _is_number(n) or int(n) != n or n < 0:
                raise ValueError(f'num_{split} must be an integer >= 0, got '
                                 f'{n!r}')
            object.__setattr__(self, f'num_{split}', int(n))
        object.__setattr__(self, 'size', (int(size[0]), int(size[1])))
        object.__setattr__(self, 'seed', int(self.seed))
        object.__setattr__(self, 'hidden_range',
                           (float(hidden_range[0]), float(hidden_range[1])))
        object.__setattr__(self, 'noise_std', float(self.noise_std))
        object.__setattr__(self, 'severity', severity)
        object.__setattr__(self, 'speeds', speeds)

    def counts(self) -> Dict[str, int]:
        """Snippets per split."""
        return {split: getattr(self, f'num_{split}') for split in SPLITS}


def _write_png(path: str, img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(
        '.png', img, [
            cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY,
            cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY
        ])
    if not ok:
        raise RuntimeError(f'cv2 could not encode {path}')
    data = buf.tobytes()
    atomic_write_bytes(path, data)
    return data


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@functools.lru_cache(maxsize=1)
def class_colours() -> np.ndarray:
    """19 BGR colours (19, 3) float32, one per training class, at least 100
    apart in one channel from each other and from the grey tones used by the
    degradation (read-only)."""
    levels = (20, 120, 220)
    colours = [
        (b, g, r) for r in levels for g in levels for b in levels
        if not (r == g == b)
    ]
    # A fixed, spread-out choice of 19 of the 24 non-grey colours.
    order = np.random.RandomState(12345).permutation(len(colours))
    return _read_only(
        np.array([colours[i] for i in order[:NUM_CLASSES]], dtype=np.float32))


@functools.lru_cache(maxsize=1)
def texture_bank() -> np.ndarray:
    """``NUM_TEXTURES`` luminance textures in [-1, 1], (K, 80, 80)
    float32 (read-only).

    Every texture is periodic with a period dividing 80 along both axes, so
    indexing the bank modulo 80 tiles the plane seamlessly.
    """
    y, x = np.mgrid[0:TEXTURE_TILE, 0:TEXTURE_TILE].astype(np.float32)
    two_pi = 2 * np.pi
    tex = [
        np.sign(np.sin(two_pi * (y + 0.5) / 8)),  # horizontal stripes
        np.sign(np.sin(two_pi * (x + 0.5) / 8)),  # vertical stripes
        np.sign(np.sin(two_pi * (x + y + 0.5) / 10)),  # diagonal
        np.sign(np.sin(two_pi * (x - y + 0.5) / 10)),  # anti-diagonal
        np.sign(
            np.sin(two_pi * (x + 0.5) / 8) * np.sin(two_pi *
                                                    (y + 0.5) / 8)),  # checks
        np.where(((x % 8) < 3) & ((y % 8) < 3), 1.0, -0.4),  # dots
        np.sign(np.sin(two_pi * (y + 0.5) / 16)),  # wide horizontal
        np.sign(np.sin(two_pi * (x + 0.5) / 16)),  # wide vertical
    ]
    return _read_only(np.stack(tex).astype(np.float32))


def _label_tables() -> Tuple[np.ndarray, np.ndarray]:
    """Lookup tables trainId -> labelId and trainId -> BGR colour (256
    entries, 255 maps to the unlabelled id 0 and black)."""
    to_id = np.zeros(256, dtype=np.uint8)
    to_colour = np.zeros((256, 3), dtype=np.uint8)
    for train_id in range(NUM_CLASSES):
        label = trainId2label[train_id]
        to_id[train_id] = label.id
        to_colour[train_id] = label.color[::-1]
    unlabelled = [lab for lab in CS_LABELS if lab.name == 'unlabeled'][0]
    to_id[255] = unlabelled.id
    return to_id, to_colour


class SnippetRenderer:
    """Renders the 30 frames and the key-frame label of one snippet.

    The scene (layout, camera pan, moving objects), the hidden area of the
    key frame and the per-frame sensor noise come from ``rng``; the extra
    objects of ``settings.speeds`` and the degradation's own draws from
    ``mode_rng``, so that the scene and the noise are the same for every
    degradation and severity. The degradation
    (:attr:`degradation`, the class registered as ``settings.mode``)
    changes only the key frame, except that occluders are drawn on every
    frame.

    Args:
        rng (np.random.Generator): The snippet's random generator.
        settings (DemoDataSettings): ``size``, ``hidden_range``,
            ``noise_std``, ``hide``, ``mode``, ``severity`` and ``speeds``
            are used.
        mode_rng (np.random.Generator, optional): Generator of the
            degradation and of the extra objects. Defaults to a child of
            ``rng`` (``rng.spawn``, which leaves ``rng``'s draws unchanged).
    """

    key_frame = KEY_FRAME
    num_textures = NUM_TEXTURES
    texture_amplitude = TEXTURE_AMPLITUDE

    def __init__(self,
                 rng: np.random.Generator,
                 settings: DemoDataSettings,
                 mode_rng: Optional[np.random.Generator] = None):
        if not isinstance(settings, DemoDataSettings):
            raise TypeError('settings must be a DemoDataSettings, got '
                            f'{type(settings).__name__}')
        degradation = get_degradation(settings.mode)
        self.hide = settings.hide
        self.mode = settings.mode
        self.severity = settings.severity
        self.rng = rng
        self.h, self.w = h, w = settings.size
        self.colours = class_colours()
        self.textures = texture_bank()
        self.noise_std = settings.noise_std
        unit = max(min(h, w) / 128.0, 0.25)
        # Camera pan: a smooth, mostly horizontal motion of a few px/frame.
        speed = rng.uniform(1.5, 3.5) * unit * rng.choice([-1, 1])
        wobble = rng.uniform(0.0, 2.0) * unit
        t = np.arange(NUM_FRAMES, dtype=np.float32)
        pan_x = speed * t
        pan_y = wobble * np.sin(
            2 * np.pi * t / NUM_FRAMES + rng.uniform(0, 2 * np.pi))
        pan_x -= pan_x.min()
        pan_y -= pan_y.min()
        self.pan = np.round(np.stack([pan_y, pan_x], 1)).astype(int)
        self.world_h = h + int(self.pan[:, 0].max())
        self.world_w = w + int(self.pan[:, 1].max())
        self.world_cls, self.world_tex = self._layout(unit)
        self.objects = self._objects(unit)
        self.unit = unit
        speeds = settings.speeds
        if mode_rng is None and (degradation.uses_mode_rng or speeds):
            mode_rng = rng.spawn(1)[0]  # leaves rng's state as it is
        self.mode_rng = mode_rng
        if speeds:
            self.objects += self._speed_objects(speeds, unit)
        self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float32)
        self.hidden = self._hidden_mask(settings.hidden_range, unit)
        self.extra_blocks = self._extra_blocks(unit)
        # at severity 0 it draws nothing from mode_rng
        self.degradation = degradation(self, self.severity)

    def _layout(self, unit: float) -> Tuple[np.ndarray, np.ndarray]:
        """Voronoi cells of the whole scene, each with a random class and a
        random texture (different from its neighbours' where possible)."""
        rng = self.rng
        area = self.world_h * self.world_w
        cell_area = (64 * unit)**2
        num_cells = int(np.clip(round(area / cell_area), 4, 40))
        seeds = np.stack(
            [
                rng.uniform(0, self.world_h, num_cells),
                rng.uniform(0, self.world_w, num_cells)
            ], 1)
        # Anisotropic distance gives some elongated, street-like cells.
        stretch = rng.uniform(0.6, 1.6, size=(num_cells, 1, 1))
        yy, xx = np.mgrid[0:self.world_h, 0:self.world_w].astype(np.float32)
        dist = ((yy[None] - seeds[:, 0, None, None]) * stretch)**2 + \
            ((xx[None] - seeds[:, 1, None, None]) / stretch)**2
        cells = dist.argmin(0)
        cls = rng.integers(0, NUM_CLASSES, size=num_cells)
        # Neighbouring cells, for a texture colouring that avoids repeats.
        pairs = set()
        for a, b in ((cells[:, :-1], cells[:, 1:]), (cells[:-1], cells[1:])):
            diff = a != b
            pairs.update(zip(a[diff].tolist(), b[diff].tolist()))
        tex = np.full(num_cells, -1)
        for c in rng.permutation(num_cells):
            used = {tex[b] for a, b in pairs if a == c} | \
                {tex[a] for a, b in pairs if b == c}
            free = [k for k in range(NUM_TEXTURES) if k not in used]
            tex[c] = rng.choice(free) if free else rng.integers(NUM_TEXTURES)
        self.world_cell = cells
        return cls[cells].astype(np.uint8), tex[cells].astype(np.int64)

    def _objects(self, unit: float) -> List[dict]:
        """A few moving objects (ellipses or boxes) in frame coordinates."""
        rng = self.rng
        objects = []
        for _ in range(rng.integers(1, 4)):
            ry = rng.uniform(14, 26) * unit
            rx = rng.uniform(16, 36) * unit
            cy0 = rng.uniform(ry, self.h - ry)
            cx0 = rng.uniform(0, self.w)
            vy = rng.uniform(-0.7, 0.7) * unit
            vx = rng.uniform(1.0, 3.0) * unit * rng.choice([-1, 1])
            objects.append(
                dict(
                    centre=(cy0 - vy * KEY_FRAME, cx0 - vx * KEY_FRAME),
                    velocity=(vy, vx),
                    radii=(ry, rx),
                    box=bool(rng.integers(2)),
                    cls=rng.integers(NUM_CLASSES),
                    tex=rng.integers(NUM_TEXTURES)))
        return objects

    def _speed_objects(self, speeds: Sequence[float],
                       unit: float) -> List[dict]:
        """One extra object per speed, moving relative to the scene (static
        ones move with the camera pan); the static ones are small."""
        rng = self.mode_rng
        objects = []
        pan = self.pan.astype(np.float32)
        for speed in speeds:
            radii = SPEED_OBJECT_RADII[0 if speed == 0 else 1]
            ry = rng.uniform(*radii) * unit
            rx = rng.uniform(*radii) * unit
            cy0 = rng.uniform(ry, self.h - ry)
            cx0 = rng.uniform(rx, self.w - rx)
            angle = rng.uniform(-0.3, 0.3) + np.pi * rng.integers(2)
            vy = speed * unit * np.sin(angle)
            vx = speed * unit * np.cos(angle)
            # Frame coordinates: the scene moves by -pan, the object by
            # (vy, vx) per frame relative to the scene.
            t = np.arange(NUM_FRAMES, dtype=np.float32)
            track = np.stack([
                cy0 + vy * (t - KEY_FRAME) - (pan[:, 0] - pan[KEY_FRAME, 0]),
                cx0 + vx * (t - KEY_FRAME) - (pan[:, 1] - pan[KEY_FRAME, 1])
            ], 1)
            objects.append(
                dict(
                    track=track,
                    radii=(ry, rx),
                    box=bool(rng.integers(2)),
                    cls=rng.integers(NUM_CLASSES),
                    tex=rng.integers(NUM_TEXTURES)))
        return objects

    @staticmethod
    def centre(obj: dict, t: int) -> Tuple[float, float]:
        """Centre (y, x) of a moving object (or occluder) in frame ``t``."""
        if 'track' in obj:
            return float(obj['track'][t, 0]), float(obj['track'][t, 1])
        return (obj['centre'][0] + obj['velocity'][0] * t,
                obj['centre'][1] + obj['velocity'][1] * t)

    def shape_mask(self, cy: float, cx: float, ry: float, rx: float,
                   box: bool) -> np.ndarray:
        """(H, W) bool: a box or an ellipse of radii (ry, rx) at (cy, cx)."""
        yy, xx = self.yy, self.xx
        if box:
            return (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
        return ((yy - cy) / ry)**2 + ((xx - cx) / rx)**2 <= 1

    def texture_at(self, tex_id: int, inside: np.ndarray, cy: float,
                   cx: float) -> np.ndarray:
        """Texture ``tex_id`` at the pixels ``inside`` ((H, W) bool) of a
        shape centred at (cy, cx), moving with the shape; (N, ) float32."""
        ty = (self.yy[inside] - int(round(cy))).astype(int)
        tx = (self.xx[inside] - int(round(cx))).astype(int)
        return self.textures[tex_id, ty % TEXTURE_TILE, tx % TEXTURE_TILE]

    def _blocks(
            self, target: float, unit: float,
            size_range: Tuple[float, float]) -> np.ndarray:
        """Union of random rectangles and ellipses covering about ``target``
        of the frame area."""
        rng = self.rng
        mask = np.zeros((self.h, self.w), dtype=bool)
        yy, xx = self.yy, self.xx
        for _ in range(100):
            covered = mask.mean()
            if covered >= target:
                break
            bh = min(rng.uniform(*size_range) * unit, self.h * 0.8)
            bw = min(rng.uniform(*size_range) * unit * 1.4, self.w * 0.6)
            cy = rng.uniform(0, self.h)
            cx = rng.uniform(0, self.w)
            if rng.integers(2):
                blob = (np.abs(yy - cy) <= bh / 2) & (
                    np.abs(xx - cx) <= bw / 2)
            else:
                blob = ((yy - cy) /
                        (bh / 2))**2 + ((xx - cx) / (bw / 2))**2 <= 1
            # Reject a blob that would overshoot the target by far.
            if (mask | blob).mean() <= target + 0.05 or covered == 0:
                mask |= blob
        return mask

    def _object_masks(self, t: int) -> List[np.ndarray]:
        """Where each moving object is in frame ``t``."""
        masks = []
        for obj in self.objects:
            cy, cx = self.centre(obj, t)
            masks.append(self.shape_mask(cy, cx, *obj['radii'], obj['box']))
        return masks

    def segments(self, t: int) -> np.ndarray:
        """(H, W) region ids of frame ``t``: scene cells, then objects."""
        py, px = self.pan[t]
        seg = self.world_cell[py:py + self.h, px:px + self.w].copy()
        for j, inside in enumerate(self._object_masks(t)):
            seg[inside] = self.world_cell.max() + 1 + j
        return seg

    def _regions(self, target: float, hi: float) -> np.ndarray:
        """Union of whole regions (scene cells and objects, as seen on the
        key frame) covering about ``target`` of the frame area."""
        seg = self.segments(KEY_FRAME)
        mask = np.zeros((self.h, self.w), dtype=bool)
        for segment in self.rng.permutation(np.unique(seg)):
            if mask.mean() >= target:
                break
            grown = mask | (seg == segment)
            if grown.mean() <= hi or not mask.any():
                mask = grown
        return mask

    def _hidden_mask(
            self, hidden_range: Tuple[float, float],
            unit: float) -> np.ndarray:
        """(H, W) int8: 0 visible, 1 glare, 2 fog on the key frame."""
        target = self.rng.uniform(*hidden_range)
        if self.hide == 'regions':
            mask = self._regions(target, hidden_range[1] + 0.05)
        else:
            mask = self._blocks(target, unit, (40, 72))
        kinds = np.zeros((self.h, self.w), dtype=np.int8)
        # Split the hidden area between glare (1) and fog (2) by halves.
        if self.rng.integers(2):
            kinds[mask] = 1
        else:
            kinds[mask] = 2
        split = self.rng.integers(self.w // 4, 3 * self.w // 4)
        right = np.zeros_like(mask)
        right[:, split:] = True
        kinds[mask & right] = 3 - kinds[mask & right]
        return kinds

    def _extra_blocks(self, unit: float) -> Dict[int, np.ndarray]:
        """Small glare blocks on a few frames outside the memory range of the
        key frame, for realism."""
        extra = {}
        for t in range(NUM_FRAMES):
            if t in CLEAN_FRAMES or t == KEY_FRAME:
                continue
            if self.rng.random() < 0.3:
                extra[t] = self._blocks(0.08, unit, (16, 32))
        return extra

    def degraded_mask(self) -> np.ndarray:
        """(H, W) bool, the part of the key frame the degradation touches
        (the whole frame for ``blur`` and ``dropout``; nothing at severity
        0)."""
        if self.severity == 0:
            return np.zeros((self.h, self.w), dtype=bool)
        return self.degradation.mask()

    def frame(self, t: int) -> Tuple[np.ndarray, np.ndarray]:
        """Render frame ``t``: (H, W, 3) uint8 BGR image, (H, W) trainIds."""
        h, w = self.h, self.w
        py, px = self.pan[t]
        cls = self.world_cls[py:py + h, px:px + w].copy()
        tex_id = self.world_tex[py:py + h, px:px + w].copy()
        tex_y, tex_x = np.mgrid[py:py + h, px:px + w]
        yy, xx = self.yy, self.xx
        for obj, inside in zip(self.objects, self._object_masks(t)):
            cy, cx = self.centre(obj, t)
            cls[inside] = obj['cls']
            tex_id[inside] = obj['tex']
            # The object's texture moves with the object.
            tex_y[inside] = (yy[inside] - int(round(cy))).astype(int)
            tex_x[inside] = (xx[inside] - int(round(cx))).astype(int)
        tex = self.textures[tex_id, tex_y % TEXTURE_TILE, tex_x % TEXTURE_TILE]
        img = self.colours[cls] + TEXTURE_AMPLITUDE * tex[..., None]
        img = self.degradation.overlay(img, t)
        if t == KEY_FRAME:
            if self.severity > 0:
                img = self.degradation.degrade_key(img, tex)
        elif t in self.extra_blocks:
            block = self.extra_blocks[t]
            img[block] = GLARE_LEVEL + \
                GLARE_TEXTURE * TEXTURE_AMPLITUDE * tex[block, None]
        img += self.noise_std * self.rng.standard_normal(
            img.shape, dtype=np.float32)
        img += self.rng.uniform(-6, 6)  # global exposure flicker
        return np.clip(img, 0, 255).astype(np.uint8), cls


def _snippet_frames(settings: DemoDataSettings, seq: int) -> range:
    """The frames written for snippet ``seq`` of a city."""
    full = settings.frames == 'all' or (settings.frames == 'auto'
                                        and seq == 0)
    return range(NUM_FRAMES) if full else MEMORY_FRAMES


def _write_snippet(out: str, split: str, city: str, seq: int,
                   snippet: SnippetRenderer, frames: range,
                   tables: Tuple[np.ndarray, np.ndarray]) -> int:
    """Write the frames of one snippet, its key frame and (outside the test
    split) its labels; return the number of files written."""
    stem = f'{city}_{seq:06d}'
    seq_dir = osp.join(out, 'leftImg8bit_sequence', split, city)
    os.makedirs(seq_dir, exist_ok=True)
    to_id, to_colour = tables
    n_files = 0
    for t in frames:
        img, label = snippet.frame(t)
        name = f'{stem}_{t:06d}_leftImg8bit.png'
        png = _write_png(osp.join(seq_dir, name), img)
        n_files += 1
        if t != KEY_FRAME:
            continue
        key_dir = osp.join(out, 'leftImg8bit', split, city)
        os.makedirs(key_dir, exist_ok=True)
        atomic_write_bytes(osp.join(key_dir, name), png)
        n_files += 1
        if split == 'test':
            continue
        gt_dir = osp.join(out, 'gtFine', split, city)
        os.makedirs(gt_dir, exist_ok=True)
        gt_stem = osp.join(gt_dir, f'{stem}_{t:06d}_gtFine_')
        _write_png(gt_stem + 'labelTrainIds.png', label)
        _write_png(gt_stem + 'labelIds.png', to_id[label])
        _write_png(gt_stem + 'color.png', to_colour[label])
        n_files += 3
    return n_files


def _readme(settings: DemoDataSettings, hidden_fraction: Optional[dict],
            command: Optional[str]) -> str:
    """README.txt: what the data is, the hidden share of the key frames and
    the degradation when it is not the demo's glare."""
    if hidden_fraction is not None:
        hidden_pct = f'{100 * hidden_fraction["mean"]:.0f}%'
        hidden_span = '{:.0f}-{:.0f}%'.format(100 * hidden_fraction['min'],
                                              100 * hidden_fraction['max'])
    else:
        lo, hi = settings.hidden_range
        hidden_pct = f'{100 * (lo + hi) / 2:.0f}%'
        hidden_span = f'{100 * lo:.0f}-{100 * hi:.0f}%'
    text = README.format(
        hidden_pct=hidden_pct,
        hidden_range=hidden_span,
        clean_first=CLEAN_FRAMES[0],
        clean_last=CLEAN_FRAMES[-1],
        command=command or 'make_demo_data(...)')
    speeds = settings.speeds
    if settings.mode == 'glare' and settings.severity == 1 and not speeds:
        return text
    note = get_degradation(settings.mode).describe(settings.severity,
                                                   hidden_pct)
    extra = f'Degradation of the annotated frame: {note}.\n'
    if speeds:
        extra += ('Extra objects per snippet moving at '
                  f'{", ".join(f"{v:g}" for v in speeds)} px/frame '
                  '(at 128 px height) through the scene.\n')
    return text + '\n' + extra


def make_demo_data(out: str,
                   settings: Optional[DemoDataSettings] = None,
                   command: Optional[str] = None,
                   verbose: bool = False) -> dict:
    """Write the synthetic demo dataset and return a summary.

    Args:
        out (str): Output root (created if needed; existing files of the same
            names are replaced).
        settings (DemoDataSettings, optional): What to generate (default:
            ``DemoDataSettings()``, the demo data); the output is a function
            of the settings.
        command (str, optional): Command line recorded in README.txt.
        verbose (bool): Show a progress bar.

    Returns:
        dict: ``splits`` (snippets, cities, files per split), the settings
        (``size``, ``seed``, ``frames``, ``hide``, ``mode``, ``severity``,
        ``speeds``), ``hidden_fraction`` (mean/min/max over labelled
        snippets of the fraction of the key frame the degradation touches)
        and ``seconds``; ``meta.json`` holds the same.
    """
    start = time.perf_counter()
    if settings is None:
        settings = DemoDataSettings()
    elif not isinstance(settings, DemoDataSettings):
        raise TypeError('settings must be a DemoDataSettings, got '
                        f'{type(settings).__name__}')
    counts = settings.counts()
    tables = _label_tables()
    progress = None
    if verbose and sum(counts.values()):
        from mmengine.utils import ProgressBar
        progress = ProgressBar(sum(counts.values()))
    summary = dict(
        splits={},
        size=list(settings.size),
        seed=settings.seed,
        frames=settings.frames,
        hide=settings.hide,
        mode=settings.mode,
        severity=settings.severity,
        speeds=None if settings.speeds is None else list(settings.speeds))
    hidden_fractions = []
    for split_index, split in enumerate(SPLITS):
        cities = SPLIT_CITIES[split]
        n_files = 0
        for i in range(counts[split]):
            city = cities[i % len(cities)]
            seq = i // len(cities)
            seed = settings.seed
            snippet = SnippetRenderer(
                np.random.default_rng([seed, split_index, i]), settings,
                mode_rng=np.random.default_rng([seed, split_index, i, 1]))
            n_files += _write_snippet(out, split, city, seq, snippet,
                                      _snippet_frames(settings, seq), tables)
            if split != 'test':
                hidden_fractions.append(
                    float(snippet.degraded_mask().mean()))
            if progress is not None:
                progress.update()
        summary['splits'][split] = dict(
            snippets=counts[split], cities=list(cities), files=n_files)
    if hidden_fractions:
        summary['hidden_fraction'] = dict(
            mean=float(np.mean(hidden_fractions)),
            min=float(np.min(hidden_fractions)),
            max=float(np.max(hidden_fractions)))
    os.makedirs(out, exist_ok=True)
    atomic_write_text(
        osp.join(out, 'README.txt'),
        _readme(settings, summary.get('hidden_fraction'), command))
    summary['seconds'] = time.perf_counter() - start
    atomic_write_text(
        osp.join(out, 'meta.json'), json.dumps(summary, indent=2))
    return summary
