# Copyright (c) lma_mmseg contributors. All rights reserved.
import random
from typing import Callable, Dict, List, Union

import numpy as np
import torch
from mmcv.transforms import TransformBroadcaster
from mmseg.registry import TRANSFORMS


def _rng_state() -> tuple:
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def _set_rng_state(state: tuple) -> None:
    random.setstate(state[0])
    np.random.set_state(state[1])
    torch.set_rng_state(state[2])


def _same_rng_state(a: tuple, b: tuple) -> bool:
    np_a, np_b = a[1], b[1]
    return (
        a[0] == b[0] and np_a[0] == np_b[0]
        and np.array_equal(np_a[1], np_b[1])
        and tuple(np_a[2:]) == tuple(np_b[2:]) and torch.equal(a[2], b[2]))


@TRANSFORMS.register_module()
class ClipTransformBroadcaster(TransformBroadcaster):
    """Apply single-frame transforms identically to every frame of a clip.

    Wraps any mmseg/mmcv transforms (``RandomResize``, ``RandomCrop``,
    ``RandomFlip``, ``PhotoMetricDistortion``, ``Resize``, ...) so that one
    draw of their random parameters is used for all T+1 frames of
    ``results['imgs']``: the wrapped transforms run on the key frame (the
    last one) with the full results, including ``gt_seg_map``, then on every
    memory frame from the same state of the ``random``, ``numpy`` and
    ``torch`` generators, so every random decision (crop box, flip, scale,
    photometric parameters, ``RandomCrop``'s ``cat_max_ratio`` retries on the
    key label) is the same. Unlike mmcv's ``TransformBroadcaster`` with
    ``share_random_params`` this also covers transforms whose random draws
    are not marked with ``cache_randomness`` (mmseg's
    ``PhotoMetricDistortion``). A transform whose draws differ between
    frames (e.g. one that draws depending on image content) is detected and
    raises an error instead of silently misaligning the clip.

    Required Keys: ``imgs`` (list of T+1 frames, key last) and whatever the
    wrapped transforms require (from the key frame's view).

    Modified Keys: ``imgs``; ``img`` becomes the transformed key frame
    (``imgs[-1]``); every other key as the wrapped transforms modify it on
    the key frame (``gt_seg_map``, ``img_shape``, ``scale_factor``,
    ``flip``, ...).

    Args:
        transforms (list[dict | callable]): The wrapped transforms.

    Example::

        dict(type='ClipTransformBroadcaster', transforms=[
            dict(type='RandomResize', scale=(2048, 1024),
                 ratio_range=(0.5, 2.0), keep_ratio=True),
            dict(type='RandomCrop', crop_size=(512, 1024),
                 cat_max_ratio=0.75),
            dict(type='RandomFlip', prob=0.5),
            dict(type='PhotoMetricDistortion'),
        ])
    """

    def __init__(self, transforms: List[Union[Dict, Callable[[Dict], Dict]]]):
        # Build from mmseg's registry (it falls back to mmcv's), so mmseg's
        # transforms are found without a default scope.
        transforms = [
            TRANSFORMS.build(t) if isinstance(t, dict) else t
            for t in transforms
        ]
        super().__init__(transforms=transforms, share_random_params=False)

    def _run(self, results: dict, img: np.ndarray) -> dict:
        inputs = dict(results)
        inputs['img'] = img
        inputs['seg_fields'] = list(results.get('seg_fields', []))
        outputs = self.transforms(inputs)
        if outputs is None:
            raise ValueError(
                f'{self.__class__.__name__}: a wrapped transform returned '
                f'None for {results.get("img_path")}; transforms that drop '
                'samples cannot be broadcast over a clip')
        return outputs

    def transform(self, results: dict) -> dict:
        imgs = results.get('imgs')
        if not imgs:
            raise KeyError(
                f'{self.__class__.__name__} needs the clip frames '
                "in results['imgs'] (use LoadClipFromFiles)")
        base = {k: v for k, v in results.items() if k != 'imgs'}
        start = _rng_state()
        key_out = self._run(base, imgs[-1])
        end = _rng_state()
        frames = []
        for i, img in enumerate(imgs[:-1]):
            _set_rng_state(start)
            out = self._run(base, img)
            if not _same_rng_state(_rng_state(), end):
                _set_rng_state(end)
                raise RuntimeError(
                    f'{self.__class__.__name__}: the wrapped transforms '
                    f'{self.transforms} drew different random numbers for '
                    f'memory frame {i} than for the key frame of '
                    f'{results.get("img_path")}; they cannot be applied '
                    'consistently over a clip')
            if out['img'].shape != key_out['img'].shape:
                _set_rng_state(end)
                raise RuntimeError(
                    f'{self.__class__.__name__}: memory frame {i} of '
                    f'{results.get("img_path")} has shape '
                    f'{out["img"].shape} after the transforms, the key frame '
                    f'{key_out["img"].shape}')
            frames.append(out['img'])
        _set_rng_state(end)
        frames.append(key_out['img'])
        key_out['imgs'] = frames
        return key_out

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(transforms={self.transforms})'
