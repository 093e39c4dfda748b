# Copyright (c) lma_mmseg contributors. All rights reserved.
import logging
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmengine import fileio
from mmengine.logging import print_log
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from .frame_names import FramePattern

MISSING_FRAME_POLICIES = ('error', 'nearest')


@DATASETS.register_module()
class VideoSegDataset(BaseSegDataset):
    """Semantic segmentation of annotated frames with their preceding frames.

    Any folder of frame sequences works whose file names carry a frame number
    (``frame_pattern``). One sample is made per annotated frame (the *key
    frame*); its memory frames are the frames of the same snippet at
    ``frame_offsets`` relative to it, in the same folder, with the same
    zero-padded width of the frame number::

        {img_path}/{sub}/{snippet}_{frame}{img_suffix}          all frames
        {seg_map_path}/{sub}/{snippet}_{frame}{seg_map_suffix}  key frames

    Samples are found from the label listing (``seg_map_path``), from
    ``ann_file`` (one ``{sub}/{snippet}_{frame}`` per line) or, without
    labels (``seg_map_path=''``), from the images of ``key_img_path`` (every
    frame of ``img_path`` when that is empty too). The key frame image is
    taken from ``img_path`` and, when missing there, from ``key_img_path``.

    Every data info holds ``img_path`` (the key frame, so single-frame
    metrics and visualisers work unchanged), ``seg_map_path`` (``None``
    without labels), ``clip_paths`` (memory frames oldest first, then the key
    frame), ``frame_offsets`` (the offset of every memory frame actually used,
    which differs from the requested one where ``missing_frames='nearest'``
    replaced a frame), ``sequence_dir`` and ``frame_stem`` (where the
    snippet's frames are, used to draw offsets per sample), ``num_classes``,
    ``label_map`` and ``reduce_zero_label``.

    Args:
        frame_offsets (Sequence[int]): Negative offsets of the memory frames
            relative to the key frame, oldest first, strictly increasing,
            e.g. ``(-3, -2, -1)`` or strided ``(-9, -6, -3)``. An empty
            sequence gives single-frame clips.
        missing_frames (str): ``'error'`` raises ``FileNotFoundError`` naming
            the missing path, the key frame and the offset when a memory
            frame does not exist; ``'nearest'`` uses the existing frame of the
            same snippet closest to the requested one (ties go to the frame
            closer to the key frame, so a frame after the key frame is never
            used) and logs one warning with the count.
        train_offsets_sampler (dict, optional): Draws the offsets per sample
            when not in ``test_mode``. ``dict(strides=(1, 2, 3))`` multiplies
            ``frame_offsets`` by a stride drawn uniformly from ``strides``
            (so ``(-3, -2, -1)`` becomes e.g. ``(-6, -4, -2)``); optional
            ``probs`` gives the stride probabilities. Frames are then
            resolved at load time with the same ``missing_frames`` policy.
            Defaults to None (fixed offsets).
        frame_pattern (str): Regular expression matched against the file
            name without suffix; its named group ``frame`` is the frame
            number and everything outside it names the snippet. Defaults to
            ``r'^.+_(?P<frame>\\d+)$'``.
        data_prefix (dict): ``img_path`` (the sequence folder),
            ``seg_map_path`` (labels; ``''`` for none) and optional
            ``key_img_path`` (fallback folder of key frames).
        **kwargs: Other arguments of :class:`mmseg.datasets.BaseSegDataset`
            (``ann_file``, ``img_suffix``, ``seg_map_suffix``, ``metainfo``,
            ``data_root``, ``pipeline``, ``test_mode``, ...).

    Note:
        Frame existence is checked on the local file system.
    """

    def __init__(
            self,
            frame_offsets: Sequence[int] = (-3, -2, -1),
            missing_frames: str = 'error',
            train_offsets_sampler: Optional[dict] = None,
            frame_pattern: str = r'^.+_(?P<frame>\d+)$',
            data_prefix: dict = dict(
                img_path='', seg_map_path='', key_img_path=''),
            **kwargs) -> None:
        cls_name = self.__class__.__name__
        self.frame_offsets = self._check_offsets(
            frame_offsets, 'frame_offsets')
        if missing_frames not in MISSING_FRAME_POLICIES:
            raise ValueError(
                f'{cls_name}: missing_frames must be one of '
                f'{MISSING_FRAME_POLICIES}, got {missing_frames!r}')
        self.missing_frames = missing_frames
        self.train_offsets_sampler = self._check_sampler(train_offsets_sampler)
        self.frame_names = FramePattern(frame_pattern, cls_name)
        data_prefix = dict(data_prefix)
        if 'img_path' not in data_prefix:
            raise KeyError(
                f"{cls_name}: data_prefix needs 'img_path', got "
                f'{data_prefix}')
        data_prefix.setdefault('seg_map_path', '')
        data_prefix.setdefault('key_img_path', '')
        for key, value in data_prefix.items():
            if value is None:
                data_prefix[key] = ''
        # Empty prefixes mean "absent"; remember that before BaseDataset
        # joins them with data_root.
        self._given_prefixes = {k for k, v in data_prefix.items() if v}
        self._listing_cache: Dict[str, Dict[Tuple[str, str], Dict[int,
                                                                  str]]] = {}
        self._sampled_misses = 0
        super().__init__(data_prefix=data_prefix, **kwargs)

    # ------------------------------------------------------------------ #
    # argument checks
    # ------------------------------------------------------------------ #
    def _check_offsets(self, offsets: Sequence[int],
                       name: str) -> Tuple[int, ...]:
        cls_name = self.__class__.__name__
        try:
            offsets = tuple(int(o) for o in offsets)
        except (TypeError, ValueError):
            raise TypeError(
                f'{cls_name}: {name} must be a sequence of ints, '
                f'got {offsets!r}') from None
        if any(o >= 0 for o in offsets) or any(
                a >= b for a, b in zip(offsets[:-1], offsets[1:])):
            raise ValueError(
                f'{cls_name}: {name} must be negative and strictly '
                f'increasing (oldest first), got {offsets}')
        return offsets

    def _check_sampler(self, sampler: Optional[dict]) -> Optional[dict]:
        if sampler is None:
            return None
        cls_name = self.__class__.__name__
        sampler = dict(sampler)
        unknown = set(sampler) - {'strides', 'probs'}
        if unknown or 'strides' not in sampler:
            raise ValueError(
                f'{cls_name}: train_offsets_sampler takes strides=(...) and '
                f'optional probs=(...), got {sampler}')
        strides = tuple(int(s) for s in sampler['strides'])
        if not strides or min(strides) < 1:
            raise ValueError(
                f'{cls_name}: train_offsets_sampler strides '
                f'must be positive ints, got {strides}')
        probs = sampler.get('probs')
        if probs is not None:
            probs = np.asarray(probs, dtype=np.float64)
            if probs.shape != (len(strides), ) or (probs < 0).any() or \
                    not np.isclose(probs.sum(), 1.0):
                raise ValueError(
                    f'{cls_name}: train_offsets_sampler probs must be '
                    f'{len(strides)} non-negative numbers summing to 1, got '
                    f'{sampler["probs"]}')
            probs = tuple(probs.tolist())
        return dict(strides=strides, probs=probs)

    # ------------------------------------------------------------------ #
    # frame naming
    # ------------------------------------------------------------------ #
    def _frames_of_snippet(self, folder: str, before: str,
                           after: str) -> Dict[int, str]:
        """All existing frames {number: file name} of one snippet in
        ``folder`` (listed once per folder and cached)."""
        listing = self._listing_cache.get(folder)
        if listing is None:
            listing = {}
            suffix = self.img_suffix
            names = sorted(os.listdir(folder)) if osp.isdir(folder) else []
            for name in names:
                if not name.endswith(suffix):
                    continue
                parts = self.frame_names.try_split(name[:-len(suffix)])
                if parts is None:
                    continue
                head, digits, tail = parts
                frames = listing.setdefault((head, tail), {})
                path = osp.join(folder, name)
                if not osp.isfile(path):
                    raise ValueError(
                        f'{self.__class__.__name__}: {path} is not a file (a '
                        'folder named like a frame?); move it out of the '
                        'frame folder')
                if int(digits) in frames:
                    raise ValueError(
                        f'{self.__class__.__name__}: '
                        f'{osp.join(folder, frames[int(digits)])} and {path} '
                        f'are both frame {int(digits)} of one snippet; keep '
                        'one of them')
                frames[int(digits)] = name
            self._listing_cache[folder] = listing
        return listing.get((before, after), {})

    def _resolve_clip(
            self, key_path: str, folder: str, stem: str,
            offsets: Sequence[int]) -> Tuple[List[str], List[int], int]:
        """Paths of the memory frames of one key frame.

        Args:
            key_path (str): The key frame image, for messages.
            folder (str): The folder of the snippet's frame sequence.
            stem (str): The key frame's file name without suffix.
            offsets (Sequence[int]): Requested memory frame offsets.

        Returns:
            tuple: memory frame paths (oldest first), the offsets actually
            used, and how many frames were replaced by a nearest one.
        """
        before, digits, after = self.frame_names.split(osp.basename(stem))
        key_frame = int(digits)
        width = len(digits)
        existing = self._frames_of_snippet(folder, before, after)
        paths, used, replaced = [], [], 0
        for offset in offsets:
            frame = key_frame + offset
            name = f'{before}{frame:0{width}d}{after}{self.img_suffix}'
            if frame in existing:
                paths.append(osp.join(folder, existing[frame]))
                used.append(offset)
                continue
            path = osp.join(folder, name)
            if self.missing_frames == 'error':
                raise FileNotFoundError(
                    f'{self.__class__.__name__}: memory frame {path} '
                    f'(offset {offset} of key frame {key_path}) does not '
                    "exist. Set missing_frames='nearest' to use the nearest "
                    'existing frame of the snippet instead.')
            candidates = sorted(existing)
            if not candidates:
                # Only the key frame of this snippet exists (for instance in
                # the fallback folder): it is the nearest frame.
                paths.append(key_path)
                used.append(0)
            else:
                nearest = min(
                    candidates,
                    key=lambda f: (abs(f - frame), abs(f - key_frame)))
                if abs(key_frame - frame) <= abs(nearest - frame) and \
                        key_frame not in existing:
                    paths.append(key_path)
                    used.append(0)
                else:
                    paths.append(osp.join(folder, existing[nearest]))
                    used.append(nearest - key_frame)
            replaced += 1
        return paths, used, replaced

    # ------------------------------------------------------------------ #
    # listing
    # ------------------------------------------------------------------ #
    def _key_stems(self) -> List[str]:
        """Relative stems ``{sub}/{snippet}_{frame}`` of all samples."""
        ann_dir = self.data_prefix['seg_map_path'] \
            if 'seg_map_path' in self._given_prefixes else ''
        key_dir = self.data_prefix['key_img_path'] \
            if 'key_img_path' in self._given_prefixes else ''
        cls_name = self.__class__.__name__
        if self.ann_file and not osp.isdir(self.ann_file):
            if not osp.isfile(self.ann_file):
                raise FileNotFoundError(
                    f'{cls_name}: ann_file {self.ann_file} does not exist')
            lines = fileio.list_from_file(
                self.ann_file, backend_args=self.backend_args)
            return [line.strip() for line in lines if line.strip()]
        if ann_dir:
            folder, suffix = ann_dir, self.seg_map_suffix
        elif key_dir:
            folder, suffix = key_dir, self.img_suffix
        else:
            folder, suffix = self.data_prefix['img_path'], self.img_suffix
        if not osp.isdir(folder):
            raise FileNotFoundError(
                f'{cls_name}: folder {folder} to list samples from does not '
                'exist (check data_root and data_prefix)')
        names = fileio.list_dir_or_file(
            dir_path=folder,
            list_dir=False,
            suffix=suffix,
            recursive=True,
            backend_args=self.backend_args)
        return sorted(name[:-len(suffix)] for name in names)

    def _seg_map_path(self, ann_dir: str, stem: str) -> str:
        """The label file of the key frame ``stem`` (relative stem as given
        by :meth:`_key_stems`) in ``ann_dir``."""
        return osp.join(ann_dir, stem + self.seg_map_suffix)

    def _no_samples_message(self) -> str:
        """Why no key frame was found: the folders and suffixes searched."""
        ann_dir = self.data_prefix['seg_map_path'] \
            if 'seg_map_path' in self._given_prefixes else ''
        key_dir = self.data_prefix['key_img_path'] \
            if 'key_img_path' in self._given_prefixes else ''
        if self.ann_file and not osp.isdir(self.ann_file):
            where = f'ann_file {self.ann_file} lists no key frame'
        elif ann_dir:
            where = (f'no label file *{self.seg_map_suffix} under '
                     f'{ann_dir} (searched recursively)')
        elif key_dir:
            where = (f'no image *{self.img_suffix} under {key_dir} '
                     '(searched recursively)')
        else:
            where = (f"no image *{self.img_suffix} under "
                     f"{self.data_prefix['img_path']} (searched recursively)")
        folder = ann_dir or key_dir
        if folder and osp.isdir(folder):
            others = []
            for root, _, files in os.walk(folder):
                others.extend(osp.join(root, f) for f in sorted(files))
                if len(others) >= 3:
                    break
            if others:
                where += (f'; it holds other files, e.g. '
                          f'{", ".join(others[:3])}')
        return (f'{self.__class__.__name__}: found no annotated frame: '
                f'{where}; frames are read from '
                f"{self.data_prefix['img_path']} (*{self.img_suffix}). Check "
                'data_root, data_prefix and the suffixes, and that the data '
                'was prepared (see "Data preparation" in the README).')

    def load_data_list(self) -> List[dict]:
        """Build one data info per annotated frame (see the class doc)."""
        cls_name = self.__class__.__name__
        img_dir = self.data_prefix['img_path']
        ann_dir = self.data_prefix['seg_map_path'] \
            if 'seg_map_path' in self._given_prefixes else ''
        key_dir = self.data_prefix['key_img_path'] \
            if 'key_img_path' in self._given_prefixes else ''
        num_classes = len(self._metainfo.get('classes') or ())
        data_list, replaced, examples = [], 0, []
        stems = self._key_stems()
        if not stems:
            raise FileNotFoundError(self._no_samples_message())
        for stem in stems:
            key_path = osp.join(img_dir, stem + self.img_suffix)
            if not osp.isfile(key_path):
                fallback = osp.join(key_dir, stem + self.img_suffix) \
                    if key_dir else ''
                if not fallback or not osp.isfile(fallback):
                    raise FileNotFoundError(
                        f'{cls_name}: key frame {key_path} does not exist' +
                        (f' (nor {fallback})' if fallback else ''))
                key_path = fallback
            seq_dir = osp.join(img_dir, osp.dirname(stem))
            paths, used, n = self._resolve_clip(
                key_path, seq_dir, osp.basename(stem), self.frame_offsets)
            if n:
                replaced += n
                if len(examples) < 3:
                    examples.append(key_path)
            data_list.append(
                dict(
                    img_path=key_path,
                    seg_map_path=self._seg_map_path(ann_dir, stem)
                    if ann_dir else None,
                    clip_paths=paths + [key_path],
                    frame_offsets=tuple(used),
                    sequence_dir=seq_dir,
                    frame_stem=osp.basename(stem),
                    num_classes=num_classes,
                    label_map=self.label_map,
                    reduce_zero_label=self.reduce_zero_label,
                    seg_fields=[]))
        if replaced:
            print_log(
                f'{cls_name}: {replaced} memory frame(s) of {len(data_list)} '
                'samples are missing and were replaced by the nearest '
                "existing frame of their snippet (missing_frames='nearest'),"
                f' e.g. for key frames {examples}',
                logger='current',
                level=logging.WARNING)
        return data_list

    def frame_paths(self, idx: int,
                    offsets: Sequence[int]) -> Tuple[List[str], List[int]]:
        """Frames of sample ``idx``'s snippet at ``offsets`` from its key
        frame.

        Args:
            idx (int): Sample index.
            offsets (Sequence[int]): Offsets ``<= 0`` in increasing order;
                ``0`` is the key frame.

        Returns:
            tuple: The frame paths and the offsets actually used (they differ
            where ``missing_frames='nearest'`` replaced a missing frame; with
            ``'error'`` a missing frame raises ``FileNotFoundError`` naming
            it).
        """
        offsets = tuple(int(o) for o in offsets)
        if any(o > 0 for o in offsets) or any(
                a >= b for a, b in zip(offsets[:-1], offsets[1:])):
            raise ValueError(
                f'{self.__class__.__name__}.frame_paths: offsets must be <= 0 '
                f'and strictly increasing, got {offsets}')
        info = super().get_data_info(idx)
        key_path = info['img_path']
        past = [o for o in offsets if o < 0]
        paths, used, _ = self._resolve_clip(key_path, info['sequence_dir'],
                                            info['frame_stem'], past)
        if 0 in offsets:
            paths.append(key_path)
            used.append(0)
        return paths, used

    # ------------------------------------------------------------------ #
    # per-sample offsets
    # ------------------------------------------------------------------ #
    def get_data_info(self, idx: int) -> dict:
        """Data info of sample ``idx``; with ``train_offsets_sampler`` (and
        not ``test_mode``) its memory frames are drawn anew."""
        data_info = super().get_data_info(idx)
        if self.train_offsets_sampler is None or self.test_mode or \
                not self.frame_offsets:
            return data_info
        sampler = self.train_offsets_sampler
        stride = int(np.random.choice(sampler['strides'], p=sampler['probs']))
        offsets = tuple(o * stride for o in self.frame_offsets)
        key_path = data_info['img_path']
        paths, used, n = self._resolve_clip(
            key_path, data_info['sequence_dir'], data_info['frame_stem'],
            offsets)
        if n and self._sampled_misses == 0:
            print_log(
                f'{self.__class__.__name__}: sampled memory frames at '
                f'offsets {offsets} of {key_path} are missing; using the '
                "nearest existing frames (missing_frames='nearest'). This "
                'warning is shown once.',
                logger='current',
                level=logging.WARNING)
        self._sampled_misses += n
        data_info['clip_paths'] = paths + [key_path]
        data_info['frame_offsets'] = tuple(used)
        return data_info
