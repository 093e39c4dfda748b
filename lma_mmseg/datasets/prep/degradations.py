# Copyright (c) lma_mmseg contributors. All rights reserved.
"""Degradations of the annotated (key) frame of a synthetic snippet.

One class per degradation, registered in :data:`DEGRADATIONS` under the
name that :class:`~lma_mmseg.datasets.prep.synthetic.DemoDataSettings` and
the generator's ``mode`` use. A degradation belongs to one
:class:`~lma_mmseg.datasets.prep.synthetic.SnippetRenderer`: it is built
after the renderer has drawn the scene and the hidden area, draws what it
needs from the renderer's ``mode_rng`` (so the scene, the per-frame noise
and the glare draws are the same for every degradation and severity), and
the renderer calls it on every frame (:meth:`Degradation.overlay`) and on
the key frame (:meth:`Degradation.degrade_key`). The labels are never
degraded.

Severity is a number in [0, 1]; at 0 a degradation draws nothing from the
generator and the renderer draws the clean frames.
"""
from typing import Callable, Dict, List, Type

import cv2
import numpy as np

__all__ = [
    'DEGRADATIONS', 'register_degradation', 'get_degradation',
    'check_severity', 'Degradation', 'Glare', 'Occlusion', 'Blur', 'Noise',
    'Dropout', 'MAX_COVER', 'MAX_BLUR', 'MAX_CONTRAST_LOSS', 'MIN_EXPOSURE'
]

#: Largest fraction of the key frame covered by occluders / noise blocks (at
#: severity 1).
MAX_COVER = 0.5
#: Longest motion-blur kernel (px at 128 px frame height) at severity 1.
MAX_BLUR = 17
#: Strongest contrast loss of the blurred key frame (at severity 1).
MAX_CONTRAST_LOSS = 0.6
#: Exposure gain of a fully dropped-out frame (severity 1).
MIN_EXPOSURE = 0.1
#: Brightness of glare and of fog, and the share of the texture they keep.
GLARE_LEVEL, GLARE_TEXTURE = 225.0, 0.6
FOG_LEVEL = 150.0

#: name -> degradation class, in registration order.
DEGRADATIONS: Dict[str, Type['Degradation']] = {}


def register_degradation(
        name: str) -> Callable[[Type['Degradation']], Type['Degradation']]:
    """Class decorator: register a :class:`Degradation` under ``name``."""

    def register(cls: Type['Degradation']) -> Type['Degradation']:
        if name in DEGRADATIONS:
            raise KeyError(f'degradation {name!r} is already registered '
                           f'({DEGRADATIONS[name].__name__})')
        cls.name = name
        DEGRADATIONS[name] = cls
        return cls

    return register


def get_degradation(mode: str) -> Type['Degradation']:
    """The degradation class registered as ``mode``.

    Raises:
        ValueError: ``mode`` is not registered (the names are listed).
    """
    if mode not in DEGRADATIONS:
        raise ValueError(
            f'mode must be one of {tuple(DEGRADATIONS)}, got {mode!r}')
    return DEGRADATIONS[mode]


def check_severity(severity: float) -> float:
    """``severity`` as a float, or a ValueError naming it if it is not a
    number in [0, 1]."""
    if isinstance(severity, bool) or not isinstance(
            severity, (int, float, np.floating)) or not 0 <= severity <= 1:
        raise ValueError(f'severity must be a number in [0, 1], got '
                         f'{severity!r}')
    return float(severity)


class Degradation:
    """Base class: what a degradation does to one snippet.

    Args:
        snippet (SnippetRenderer): The snippet it degrades (frame size
            ``h, w``, ``unit`` = frame scale over 128 px, ``mode_rng``,
            ``hidden`` map, moving ``objects``).
        severity (float): Strength in [0, 1] (at 0 the renderer calls
            neither :meth:`degrade_key` nor :meth:`mask`).
    """

    #: Name it is registered under (set by :func:`register_degradation`).
    name = ''
    #: Whether it draws from the snippet's ``mode_rng`` (a degradation that
    #: does not leaves the generator to the extra moving objects).
    uses_mode_rng = True
    #: README sentence; ``{severity}``, ``{pct}`` (share of the key frame
    #: touched) and ``{gain}`` (exposure gain) are filled in.
    note = ''

    def __init__(self, snippet, severity: float):
        self.snippet = snippet
        self.severity = severity

    @classmethod
    def describe(cls, severity: float, pct: str) -> str:
        """The README sentence for ``severity``; ``pct`` is the share of
        the key frame touched (e.g. ``'40%'``)."""
        return cls.note.format(
            severity=severity,
            pct=pct,
            gain=1 - (1 - MIN_EXPOSURE) * severity)

    def overlay(self, img: np.ndarray, t: int) -> np.ndarray:
        """Draw on frame ``t`` before the key-frame degradation (image
        (H, W, 3) float32 BGR); the default leaves every frame as it is."""
        return img

    def degrade_key(self, img: np.ndarray, tex: np.ndarray) -> np.ndarray:
        """Degrade the clean key frame ``img`` (H, W, 3) float32 BGR,
        before the sensor noise; ``tex`` is its texture (H, W) in [-1, 1].
        The default leaves it as it is."""
        return img

    def mask(self) -> np.ndarray:
        """(H, W) bool: the part of the key frame it touches (the whole
        frame by default)."""
        return np.ones((self.snippet.h, self.snippet.w), dtype=bool)


@register_degradation('glare')
class Glare(Degradation):
    """Glare or fog over the snippet's hidden area (``hide`` and
    ``hidden_range`` of the settings); severity is its opacity (1: the
    colour is replaced, as the demo data has it)."""

    uses_mode_rng = False
    note = 'glare or fog of opacity {severity:g} over the hidden area'

    def degrade_key(self, img: np.ndarray, tex: np.ndarray) -> np.ndarray:
        s = self.severity
        amp = self.snippet.texture_amplitude
        glare = self.snippet.hidden == 1
        fog = self.snippet.hidden == 2
        if s == 1:
            img[glare] = GLARE_LEVEL + GLARE_TEXTURE * amp * tex[glare, None]
            img[fog] = FOG_LEVEL + amp * tex[fog, None]
        else:
            img[glare] = (1 - s) * img[glare] + s * (
                GLARE_LEVEL + GLARE_TEXTURE * amp * tex[glare, None])
            img[fog] = (1 - s) * img[fog] + s * (
                FOG_LEVEL + amp * tex[fog, None])
        return img

    def mask(self) -> np.ndarray:
        return self.snippet.hidden > 0


@register_degradation('occlusion')
class Occlusion(Degradation):
    """Grey, textured occluders moving across the frame in front of the
    scene (in front of the moving objects first), covering ``MAX_COVER *
    severity`` of the key frame. They are drawn on every frame, so the
    memory frames show only what they did not cover there."""

    note = ('grey occluders that move in front of the scene and are '
            'present on the earlier frames too, covering {pct} of the '
            'annotated frame (instead of glare/fog)')

    def __init__(self, snippet, severity: float):
        super().__init__(snippet, severity)
        self.occluders = self._draw(MAX_COVER * severity)

    def _draw(self, target: float) -> List[dict]:
        """Occluders covering about ``target`` of the key frame."""
        snip = self.snippet
        rng, unit, key = snip.mode_rng, snip.unit, snip.key_frame
        occluders = []
        covered = np.zeros((snip.h, snip.w), dtype=bool)
        centres = [snip.centre(obj, key) for obj in snip.objects]
        for k in range(60):
            if covered.mean() >= target:
                break
            ry = rng.uniform(10, 22) * unit
            rx = rng.uniform(8, 30) * unit
            if k < len(centres):
                cy, cx = centres[k]
                cy += rng.uniform(-0.5, 0.5) * ry
                cx += rng.uniform(-0.5, 0.5) * rx
            else:
                cy = rng.uniform(0, snip.h)
                cx = rng.uniform(0, snip.w)
            vy = rng.uniform(-1.0, 1.0) * unit
            vx = rng.uniform(2.0, 5.0) * unit * rng.choice([-1, 1])
            occ = dict(
                centre=(cy - vy * key, cx - vx * key),
                velocity=(vy, vx),
                radii=(ry, rx),
                box=bool(rng.integers(2)),
                grey=rng.uniform(70, 190),
                tex=rng.integers(snip.num_textures))
            blob = snip.shape_mask(cy, cx, ry, rx, occ['box'])
            # Reject one that would overshoot the target by far.
            if (covered | blob).mean() <= target + 0.05 or not covered.any():
                covered |= blob
                occluders.append(occ)
        return occluders

    def occluder_mask(self, t: int) -> np.ndarray:
        """(H, W) bool, where the occluders are in frame ``t``."""
        snip = self.snippet
        mask = np.zeros((snip.h, snip.w), dtype=bool)
        for occ in self.occluders:
            cy, cx = snip.centre(occ, t)
            mask |= snip.shape_mask(cy, cx, *occ['radii'], occ['box'])
        return mask

    def overlay(self, img: np.ndarray, t: int) -> np.ndarray:
        if not self.occluders:
            return img
        snip = self.snippet
        h, w = snip.h, snip.w
        occ_tex = np.zeros((h, w), np.float32)
        occ_grey = np.zeros((h, w), np.float32)
        occluded = np.zeros((h, w), dtype=bool)
        for occ in self.occluders:
            cy, cx = snip.centre(occ, t)
            inside = snip.shape_mask(cy, cx, *occ['radii'], occ['box'])
            # the occluder's own texture moves with it
            occ_tex[inside] = snip.texture_at(occ['tex'], inside, cy, cx)
            occ_grey[inside] = occ['grey']
            occluded |= inside
        img[occluded] = occ_grey[occluded, None] + \
            0.5 * snip.texture_amplitude * occ_tex[occluded, None]
        return img

    def mask(self) -> np.ndarray:
        return self.occluder_mask(self.snippet.key_frame)


@register_degradation('blur')
class Blur(Degradation):
    """Horizontal motion blur (a kernel of up to ``MAX_BLUR`` px at 128 px
    height) and a contrast loss (up to ``MAX_CONTRAST_LOSS``) of the whole
    key frame."""

    note = ('horizontal motion blur and a contrast loss of the whole '
            'annotated frame, severity {severity:g} (instead of glare/fog)')

    def degrade_key(self, img: np.ndarray, tex: np.ndarray) -> np.ndarray:
        s = self.severity
        length = 1 + 2 * int(round(s * (MAX_BLUR - 1) / 2 * self.snippet.unit))
        if length > 1:
            kernel = np.full((1, length), 1.0 / length, np.float32)
            img = cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT)
        mean = img.mean(axis=(0, 1), keepdims=True)
        return mean + (1 - MAX_CONTRAST_LOSS * s) * (img - mean)


@register_degradation('noise')
class Noise(Degradation):
    """Blocks covering ``MAX_COVER * severity`` of the key frame are
    replaced by uniform colour noise."""

    note = ('blocks of uniform colour noise covering {pct} of the '
            'annotated frame (instead of glare/fog)')

    def __init__(self, snippet, severity: float):
        super().__init__(snippet, severity)
        self.cover = self._draw(MAX_COVER * severity)

    def _draw(self, target: float) -> np.ndarray:
        """Union of rectangles covering about ``target`` of the frame."""
        snip = self.snippet
        rng, unit = snip.mode_rng, snip.unit
        mask = np.zeros((snip.h, snip.w), dtype=bool)
        for _ in range(100):
            covered = mask.mean()
            if covered >= target:
                break
            bh = min(rng.uniform(16, 48) * unit, snip.h * 0.8)
            bw = min(rng.uniform(16, 48) * unit * 1.4, snip.w * 0.6)
            cy = rng.uniform(0, snip.h)
            cx = rng.uniform(0, snip.w)
            blob = (np.abs(snip.yy - cy) <= bh / 2) & (
                np.abs(snip.xx - cx) <= bw / 2)
            if (mask | blob).mean() <= target + 0.05 or covered == 0:
                mask |= blob
        return mask

    def degrade_key(self, img: np.ndarray, tex: np.ndarray) -> np.ndarray:
        cover = self.cover
        img[cover] = self.snippet.mode_rng.uniform(
            0, 255, size=(int(cover.sum()), 3)).astype(np.float32)
        return img

    def mask(self) -> np.ndarray:
        return self.cover.copy()


@register_degradation('dropout')
class Dropout(Degradation):
    """Under-exposure of the whole key frame: its intensity times ``1 - (1 -
    MIN_EXPOSURE) * severity`` before the sensor noise."""

    note = ('under-exposure of the whole annotated frame (intensity '
            'x{gain:.2f}, instead of glare/fog)')

    def degrade_key(self, img: np.ndarray, tex: np.ndarray) -> np.ndarray:
        return img * (1 - (1 - MIN_EXPOSURE) * self.severity)
