# Copyright (c) lma_mmseg contributors. All rights reserved.
"""Prepare Cityscapes video data from the official archives, taking only the
frames the clips need.

``leftImg8bit_sequence_trainvaltest.zip`` holds all 30 frames of every
snippet (about 324 GB); a model with memory frames at offsets ``(-3, -2,
-1)`` needs 4 of them per annotated frame. :func:`prepare` reads the
annotated frames from ``gtFine`` (``gtFine_trainvaltest.zip``), extracts from
the sequence archive only the frames at the requested offsets of each
annotated frame (the annotated frame included) by ``zipfile`` member access,
extracts the ``gtFine`` files of the requested splits and creates
``*_gtFine_labelTrainIds.png`` with cityscapesscripts' label table, the way
its ``createTrainIdLabelImgs`` does, in parallel.

Every file is written atomically (temporary file, then rename), so a file
under its final name is complete. A rerun skips the files already there (of
the member's size) and removes the temporary files an interrupted run left.

Sources are not trusted: every member's destination is resolved and must
lie inside ``out`` (a name such as ``gtFine/train/x/../../../../etc/F`` is
refused before anything is written), symbolic links of an extracted tree
that lead out of it are not followed, every extracted image is decoded
(and sized against its snippet's annotated frame) before it is placed, and a
polygon file's ``imgWidth`` x ``imgHeight`` must be its frame's size (the
label image is drawn at that size). One run at a time writes into ``out``:
a second one is refused with the holder's pid and host (:func:`prepare`
holds :func:`lma_mmseg.fileio.folder_lock` on ``out``).

Sources (``ZIP_OR_DIR``) are official zip files, folders holding them, or
folders holding already extracted ``leftImg8bit_sequence/`` and/or
``gtFine/`` trees.
"""
import contextlib
import glob
import io
import json
import logging
import os
import os.path as osp
import re
import zipfile
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from mmengine.logging import print_log

from ...fileio import (atomic_path, atomic_write_bytes, folder_lock,
                       is_temp_file, output_folder, remove_stale_temp_files)

__all__ = [
    'OFFICIAL_ZIPS', 'PrepError', 'MissingMembersError', 'ZipSource',
    'DirSource', 'open_sources', 'SourceIndex', 'plan_members', 'prepare',
    'create_label_train_ids', 'check', 'offsets_from_config'
]

#: The official archives this module reads.
OFFICIAL_ZIPS = ('leftImg8bit_sequence_trainvaltest.zip',
                 'gtFine_trainvaltest.zip')
SEQ_DIR = 'leftImg8bit_sequence'
GT_DIR = 'gtFine'
KEY_RE = re.compile(r'^(?P<city>[^/]+)_(?P<seq>\d{6})_(?P<frame>\d{6})'
                    r'_gtFine_polygons\.json$')
POLYGONS = '_gtFine_polygons.json'
TRAIN_IDS = '_gtFine_labelTrainIds.png'
FRAME_SUFFIX = '_leftImg8bit.png'
#: The lock file :func:`prepare` holds in ``out``.
LOCK_NAME = '.cityscapes_seq.lock'
#: ``{split}/{city}/{city}_{seq}`` of a frame or gtFine member: its snippet.
SNIPPET_RE = re.compile(r'^(?:leftImg8bit_sequence|gtFine)/(?P<split>[^/]+)/'
                        r'(?P<city>[^/]+)/(?P=city)_(?P<seq>\d{6})_\d{6}_')


class PrepError(RuntimeError):
    """A source cannot be used (corrupt archive, unreadable member, ...)."""


class MissingMembersError(PrepError):
    """Members the clips need are in none of the sources."""

    def __init__(self, missing: Sequence[str], sources: Sequence[str]):
        self.missing = list(missing)
        shown = '\n  '.join(self.missing[:20])
        more = (f'\n  ... and {len(self.missing) - 20} more'
                if len(self.missing) > 20 else '')
        super().__init__(
            f'{len(self.missing)} needed file(s) are in none of the sources '
            f'{list(sources)}:\n  {shown}{more}')


def _copy_stream(src, dst, length: int = 1 << 20) -> int:
    """Copy a file object into another; return the bytes copied."""
    total = 0
    while True:
        chunk = src.read(length)
        if not chunk:
            return total
        dst.write(chunk)
        total += len(chunk)


def _normalise(name: str) -> Optional[str]:
    """``leftImg8bit_sequence/...`` or ``gtFine/...`` part of a member name,
    None for other members (license, README, folders)."""
    name = name.replace('\\', '/')
    if name.endswith('/'):
        return None
    parts = name.split('/')
    for i, part in enumerate(parts):
        if part in (SEQ_DIR, GT_DIR):
            return '/'.join(parts[i:])
    return None


class ZipSource:
    """An official zip archive, read member by member.

    Args:
        path (str): The zip file.

    Raises:
        PrepError: The file is not a readable zip archive.
    """

    def __init__(self, path: str):
        self.path = path
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise PrepError(
                f'{path} is not a readable zip archive ({exc}); download it '
                'again (a partial download is the usual cause)') from exc
        self._members = {}
        for info in self.zip.infolist():
            name = _normalise(info.filename)
            if name is not None:
                self._members[name] = info

    def names(self) -> Iterable[str]:
        return self._members.keys()

    def size_of(self, name: str) -> int:
        return self._members[name].file_size

    @property
    def archive_bytes(self) -> int:
        return os.path.getsize(self.path)

    def copy_to(self, name: str, dst) -> int:
        """Write member ``name`` into the open file ``dst``."""
        info = self._members[name]
        try:
            with self.zip.open(info) as src:
                return _copy_stream(src, dst)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError,
                NotImplementedError) as exc:
            raise PrepError(
                f'member {info.filename} of {self.path} cannot be read '
                f'({exc}); the archive is corrupt, download it again') \
                from exc

    def read(self, name: str) -> bytes:
        buf = io.BytesIO()
        self.copy_to(name, buf)
        return buf.getvalue()

    def check(self, name: str) -> None:
        """Nothing to refuse: a zip member is read from the archive."""

    def __repr__(self) -> str:
        return self.path


def _inside(path: str, folder: str) -> bool:
    """Whether the resolved ``path`` lies in the resolved ``folder``."""
    return osp.commonpath([path, folder]) == folder


class DirSource:
    """An extracted tree holding ``leftImg8bit_sequence/`` and/or
    ``gtFine/``.

    Symbolic links inside ``leftImg8bit_sequence/`` and ``gtFine/`` that
    lead out of that folder (once resolved) are not followed: such a member
    is refused by :meth:`check` (the two folders themselves may be links,
    e.g. to another disk).
    """

    def __init__(self, path: str):
        self.path = path
        self._members = {}
        self._outside = {}
        for top in (SEQ_DIR, GT_DIR):
            base = osp.join(path, top)
            real_base = osp.realpath(base)
            for folder, _, files in os.walk(base):
                for name in files:
                    if is_temp_file(name):
                        continue
                    full = osp.join(folder, name)
                    rel = osp.relpath(full, path).replace(os.sep, '/')
                    self._members[rel] = full
                    real = osp.realpath(full)
                    if not _inside(real, real_base):
                        self._outside[rel] = real

    def check(self, name: str) -> None:
        """Refuse a member that is a link out of its tree.

        Raises:
            PrepError: The member resolves outside the tree (named, with
                its target).
        """
        full = self._members[name]
        real = osp.realpath(full)
        top = osp.realpath(osp.join(self.path, name.split('/', 1)[0]))
        if name in self._outside or not _inside(real, top):
            raise PrepError(
                f'{full} is a symbolic link to {real}, outside the source '
                f'tree {top}; links out of the tree are not followed '
                '(copy the file into the tree)')

    def names(self) -> Iterable[str]:
        return self._members.keys()

    def size_of(self, name: str) -> int:
        return os.path.getsize(self._members[name])

    archive_bytes = 0

    def copy_to(self, name: str, dst) -> int:
        self.check(name)
        try:
            with open(self._members[name], 'rb') as src:
                return _copy_stream(src, dst)
        except OSError as exc:
            raise PrepError(f'{self._members[name]} cannot be read ({exc})') \
                from exc

    def read(self, name: str) -> bytes:
        self.check(name)
        with open(self._members[name], 'rb') as f:
            return f.read()

    def __repr__(self) -> str:
        return self.path


def open_sources(paths: Sequence[str]) -> List:
    """Sources from zip files and folders (see the module doc).

    Raises:
        FileNotFoundError: A path does not exist, or a folder holds neither
            an official zip nor an extracted tree.
        PrepError: A zip is corrupt.
    """
    if not paths:
        raise ValueError('give the official zip files (or folders holding '
                         f'them): {", ".join(OFFICIAL_ZIPS)}')
    sources = []
    for path in paths:
        if osp.isfile(path):
            sources.append(ZipSource(path))
        elif osp.isdir(path):
            zips = [osp.join(path, z) for z in OFFICIAL_ZIPS
                    if osp.isfile(osp.join(path, z))]
            trees = [d for d in (SEQ_DIR, GT_DIR)
                     if osp.isdir(osp.join(path, d))]
            if not zips and not trees:
                raise FileNotFoundError(
                    f'folder {path} holds neither an official archive '
                    f'({", ".join(OFFICIAL_ZIPS)}) nor an extracted '
                    f'{SEQ_DIR}/ or {GT_DIR}/ folder')
            sources.extend(ZipSource(z) for z in zips)
            if trees:
                sources.append(DirSource(path))
        else:
            raise FileNotFoundError(f'source {path} does not exist')
    return sources


class SourceIndex:
    """Which source holds each member (the first one given wins)."""

    def __init__(self, sources: Sequence):
        self.sources = list(sources)
        self.where: Dict[str, object] = {}
        for source in self.sources:
            for name in source.names():
                self.where.setdefault(name, source)

    def key_frames(self, split: str) -> List[str]:
        """``{city}/{city}_{seq}_{frame}`` of the annotated frames of
        ``split`` (from the ``gtFine`` polygon files)."""
        prefix = f'{GT_DIR}/{split}/'
        keys = []
        for name in self.where:
            if name.startswith(prefix):
                rel = name[len(prefix):]
                city, _, base = rel.partition('/')
                if KEY_RE.match(base):
                    keys.append(f'{city}/{base[:-len(POLYGONS)]}')
        return sorted(keys)


def _frame_name(split: str, key: str, offset: int) -> str:
    city, stem = key.split('/')
    head, frame = stem.rsplit('_', 1)
    return (f'{SEQ_DIR}/{split}/{city}/{head}_{int(frame) + offset:06d}'
            f'{FRAME_SUFFIX}')


def plan_members(index: SourceIndex,
                 offsets: Dict[str, Sequence[int]]) -> Tuple[List[str], dict]:
    """The members to extract: the frames of every annotated frame at the
    split's offsets (and the annotated frame itself) and all ``gtFine``
    files of the split.

    Args:
        index (SourceIndex): The sources.
        offsets (dict[str, Sequence[int]]): split -> frame offsets.

    Returns:
        tuple: member names (sorted) and per split the number of annotated
        frames.

    Raises:
        MissingMembersError: Needed members are in no source (all named), or
            a split has no annotation in any source.
    """
    needed, missing, counts = set(), [], OrderedDict()
    for split, offs in offsets.items():
        keys = index.key_frames(split)
        counts[split] = len(keys)
        if not keys:
            missing.append(f'{GT_DIR}/{split}/*/*{POLYGONS} (no annotated '
                           'frame of this split)')
            continue
        offs = sorted(set(int(o) for o in offs) | {0})
        for key in keys:
            for offset in offs:
                needed.add(_frame_name(split, key, offset))
        prefix = f'{GT_DIR}/{split}/'
        needed.update(n for n in index.where if n.startswith(prefix))
    missing.extend(sorted(n for n in needed if n not in index.where))
    if missing:
        raise MissingMembersError(missing, [repr(s) for s in index.sources])
    return sorted(needed), counts


def _remove_stale_temps(folders: Iterable[str]) -> int:
    return sum(
        len(remove_stale_temp_files(folder)) for folder in folders
        if osp.isdir(folder))


def _check_destinations(out: str, members: Sequence[str],
                        index: 'SourceIndex') -> None:
    """Refuse the run when a member's resolved destination is not inside
    ``out`` (``..`` in its name, or a link in ``out`` leading elsewhere).

    Raises:
        PrepError: Naming every such member, its source and destination.
    """
    real_out = osp.realpath(out)
    bad = []
    for name in members:
        parts = name.split('/')
        dst = osp.realpath(osp.join(real_out, *parts))
        if any(p in ('', '.', '..') for p in parts) or \
                not _inside(dst, real_out) or dst == real_out:
            bad.append(f'{name} (in {index.where[name]!r}) -> {dst}')
    if bad:
        shown = '\n  '.join(bad[:20])
        more = f'\n  ... and {len(bad) - 20} more' if len(bad) > 20 else ''
        raise PrepError(
            f'{len(bad)} member(s) would be written outside the output '
            f'folder {out} ({real_out}); refused, nothing was written:\n  '
            f'{shown}{more}')


def _snippet(name: str) -> Optional[str]:
    """``{split}/{city}/{city}_{seq}`` of a frame or gtFine member."""
    match = SNIPPET_RE.match(name)
    if match is None:
        return None
    return f'{match["split"]}/{match["city"]}/{match["city"]}_{match["seq"]}'


def _size_text(size: Tuple[int, int]) -> str:
    return f'{size[0]}x{size[1]}'


def _decode_image(path: str, what: str) -> Tuple[int, int]:
    """Decode a PNG file completely; return its (width, height).

    Raises:
        PrepError: ``what`` is not a decodable PNG, or larger than PIL's
            ``Image.MAX_IMAGE_PIXELS`` (decompression bomb).
    """
    from PIL import Image
    try:
        with Image.open(path) as img:
            size = img.size
            if img.format != 'PNG':
                raise PrepError(f'{what} is a {img.format} image, not a PNG')
            if Image.MAX_IMAGE_PIXELS and \
                    size[0] * size[1] > Image.MAX_IMAGE_PIXELS:
                raise PrepError(
                    f'{what} claims {_size_text(size)} pixels, more than '
                    f'{Image.MAX_IMAGE_PIXELS} (PIL.Image.MAX_IMAGE_PIXELS); '
                    'refused')
            img.load()
    except (PrepError, FileNotFoundError):
        raise
    except Exception as exc:  # UnidentifiedImageError, OSError, SyntaxError
        raise PrepError(f'{what} is not a decodable PNG image '
                        f'({type(exc).__name__}: {exc})') from exc
    return size


def _header_size(path: str) -> Tuple[int, int]:
    """(width, height) from an image file's header (nothing decoded)."""
    from PIL import Image
    try:
        with Image.open(path) as img:
            return img.size
    except Exception as exc:
        raise PrepError(f'{path} is not a readable image ({exc})') from exc


def _polygons_size(data: bytes, what: str) -> Tuple[int, int]:
    """``(imgWidth, imgHeight)`` of a polygon file's content."""
    try:
        annotation = json.loads(data)
        size = (annotation['imgWidth'], annotation['imgHeight'])
    except (ValueError, KeyError, TypeError) as exc:
        raise PrepError(f'{what} is not a Cityscapes polygon file '
                        f'({type(exc).__name__}: {exc})') from exc
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
               for v in size):
        raise PrepError(f'{what}: imgWidth and imgHeight must be positive '
                        f'ints, got {size}')
    return size


def _verify_member(tmp: str, name: str, source,
                   expected: Optional[Tuple[int, int]]
                   ) -> Optional[Tuple[int, int]]:
    """Check an extracted member (still under its temporary name) before it
    is placed: a PNG must decode, with the size of its snippet's annotated
    frame (``expected``) when known; a polygon file must claim that size.

    Returns:
        tuple | None: The image's (width, height), None for other files.

    Raises:
        PrepError: Naming the member, its source and the sizes.
    """
    what = f'member {name} of {source!r}'
    if name.endswith('.png'):
        size = _decode_image(tmp, what)
    elif name.endswith(POLYGONS):
        with open(tmp, 'rb') as f:
            size = _polygons_size(f.read(), what)
    else:
        return None
    if expected is not None and size != expected:
        raise PrepError(
            f'{what} is {_size_text(size)} (width x height), but the '
            f'annotated frame of its snippet is {_size_text(expected)}; '
            'refused')
    return size


def _frame_of_polygons(json_path: str) -> str:
    """The annotated frame ``{root}/leftImg8bit_sequence/{split}/{city}/
    {stem}_leftImg8bit.png`` of ``{root}/gtFine/{split}/{city}/
    {stem}_gtFine_polygons.json``."""
    city_dir = osp.dirname(json_path)
    split_dir = osp.dirname(city_dir)
    root = osp.dirname(osp.dirname(split_dir))
    stem = osp.basename(json_path)[:-len(POLYGONS)]
    return osp.join(root, SEQ_DIR, osp.basename(split_dir),
                    osp.basename(city_dir), stem + FRAME_SUFFIX)


def _label_train_ids(json_path: str) -> str:
    """Create the labelTrainIds PNG of one polygon file (worker).

    The label image is drawn at the polygon file's ``imgWidth`` x
    ``imgHeight``, which must be the size of its annotated frame.
    """
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.preparation.json2labelImg import createLabelImage
    dst = json_path[:-len(POLYGONS)] + TRAIN_IDS
    frame = _frame_of_polygons(json_path)
    if not osp.isfile(frame):
        raise ValueError(
            f'{json_path}: its annotated frame {frame} is missing; the label '
            'image is bounded by the frame\'s size')
    with open(json_path, 'rb') as f:
        try:
            claimed = _polygons_size(f.read(), json_path)
        except PrepError as exc:
            raise ValueError(str(exc)) from exc
    try:
        frame_size = _header_size(frame)
    except PrepError as exc:
        raise ValueError(str(exc)) from exc
    if claimed != frame_size:
        raise ValueError(
            f'{json_path} claims a {_size_text(claimed)} image, but its '
            f'frame {frame} is {_size_text(frame_size)}; refused (the label '
            'image would be drawn at the claimed size)')
    try:
        annotation = Annotation()
        annotation.fromJsonFile(json_path)
        img = createLabelImage(annotation, 'trainIds')
    except SystemExit:  # cityscapesscripts' printError on unknown labels
        raise ValueError(
            f'{json_path}: cityscapesscripts could not convert it (unknown '
            'label?)') from None
    except Exception as exc:
        raise ValueError(f'{json_path}: cannot be converted to trainIds '
                         f'({type(exc).__name__}: {exc})') from exc
    buf = io.BytesIO()
    img.save(buf, format='PNG')
    atomic_write_bytes(dst, buf.getvalue())
    return dst


def create_label_train_ids(root: str,
                           splits: Sequence[str],
                           workers: int = 2,
                           progress: bool = True) -> Tuple[int, int]:
    """Create ``*_gtFine_labelTrainIds.png`` next to every polygon file of
    ``root/gtFine/{split}`` that lacks one, with cityscapesscripts' label
    table (as its ``createTrainIdLabelImgs``), in ``workers`` processes.

    Each polygon file's ``imgWidth`` x ``imgHeight`` must be the size of its
    annotated frame in ``root/leftImg8bit_sequence`` (a ``ValueError``
    names both otherwise).

    Returns:
        tuple: (created, already there).
    """
    todo, done = [], 0
    for split in splits:
        for path in sorted(
                glob.glob(osp.join(root, GT_DIR, split, '*', '*' + POLYGONS))):
            if osp.isfile(path[:-len(POLYGONS)] + TRAIN_IDS):
                done += 1
            else:
                todo.append(path)
    if not todo:
        return 0, done
    bar = None
    if progress:
        from mmengine.utils import ProgressBar
        print_log(f'creating {len(todo)} labelTrainIds files', 'current')
        bar = ProgressBar(len(todo))
    if workers > 1 and len(todo) > 1:
        import multiprocessing
        method = 'fork' if 'fork' in \
            multiprocessing.get_all_start_methods() else 'spawn'
        ctx = multiprocessing.get_context(method)
        with ctx.Pool(min(workers, len(todo))) as pool:
            for _ in pool.imap_unordered(_label_train_ids, todo,
                                         chunksize=8):
                if bar is not None:
                    bar.update()
    else:
        for path in todo:
            _label_train_ids(path)
            if bar is not None:
                bar.update()
    if bar is not None:
        print()
    return len(todo), done


def _extract(index: 'SourceIndex', members: Sequence[str], out: str,
             key_frames: Sequence[str], bar) -> Tuple[int, int, int]:
    """Extract ``members`` into ``out``, the annotated frames first; every
    member is checked (:func:`_verify_member`) before it is placed.

    Returns:
        tuple: (extracted, skipped, bytes written).
    """
    key_set = set(key_frames)
    order = [m for m in members if m in key_set] + \
        [m for m in members if m not in key_set]
    sizes: Dict[str, Tuple[int, int]] = {}
    extracted = skipped = written = 0
    for name in order:
        source = index.where[name]
        dst = osp.join(out, name)
        snippet = _snippet(name)
        size = source.size_of(name)
        if osp.isfile(dst) and osp.getsize(dst) == size:
            skipped += 1
            if name in key_set:
                sizes[snippet] = _header_size(dst)
        else:
            with atomic_path(dst) as tmp:
                with open(tmp, 'wb') as f:
                    written += source.copy_to(name, f)
                got = _verify_member(tmp, name, source, sizes.get(snippet))
            if name in key_set:
                sizes[snippet] = got
            extracted += 1
        if bar is not None:
            bar.update()
    return extracted, skipped, written


def prepare(sources: Sequence[str],
            out: str,
            offsets: Dict[str, Sequence[int]],
            workers: int = 2,
            label_train_ids: bool = True,
            progress: bool = True) -> dict:
    """Extract the needed frames and ``gtFine``, then create labelTrainIds.

    Nothing is written before the plan is complete: every needed member
    exists, its destination lies inside ``out`` and no member of an
    extracted tree is a link out of it. The run then holds the lock of
    ``out`` (:data:`LOCK_NAME`) and extracts each member through a
    temporary file, decoded and sized before it is placed.

    Args:
        sources (Sequence[str]): Zip files or folders (see the module doc).
        out (str): The Cityscapes root to write (``data/cityscapes``).
        offsets (dict[str, Sequence[int]]): split -> memory frame offsets
            (negative; the annotated frame is always extracted).
        workers (int): Processes creating labelTrainIds. Defaults to 2.
        label_train_ids (bool): Create the labelTrainIds files.
        progress (bool): Show progress bars.

    Returns:
        dict: ``key_frames`` (per split), ``members`` (needed), ``extracted``,
        ``skipped`` (already complete), ``bytes_written``, ``archive_bytes``
        (size of the zip sources), ``stale_temps_removed``,
        ``label_train_ids`` (created, already there).

    Raises:
        MissingMembersError: Needed members are in no source.
        PrepError: A corrupt archive or member, a member outside ``out``,
            a link out of a source tree, an image that does not decode or
            has another size than its snippet's annotated frame.
        FolderLockedError: Another run writes into ``out``.
        OSError: ``out`` cannot be written (named).
    """
    for split, offs in offsets.items():
        if any(int(o) > 0 for o in offs):
            raise ValueError(f'offsets of split {split} must be <= 0 (frames '
                             f'before the annotated one), got {list(offs)}')
    opened = open_sources(sources)
    try:
        index = SourceIndex(opened)
        members, counts = plan_members(index, offsets)
        _check_destinations(out, members, index)
        for name in members:
            index.where[name].check(name)
        key_frames = [
            _frame_name(split, key, 0) for split in offsets
            for key in index.key_frames(split)
        ]
        created = not osp.lexists(out)
        output_folder(out, 'output folder')
        try:
            with folder_lock(out, LOCK_NAME,
                             command=f'cityscapes_seq prepare -> {out}'):
                summary = _prepare_locked(index, members, counts, key_frames,
                                          out, offsets, workers,
                                          label_train_ids, progress)
        except BaseException:
            if created:  # leave no empty folder behind
                with contextlib.suppress(OSError):
                    os.rmdir(out)
            raise
        summary['archive_bytes'] = sum(s.archive_bytes for s in opened
                                       if isinstance(s, ZipSource))
    finally:
        for source in opened:
            if isinstance(source, ZipSource):
                source.zip.close()
    return summary


def _prepare_locked(index, members, counts, key_frames, out, offsets,
                    workers, label_train_ids, progress) -> dict:
    """The writing part of :func:`prepare`, under the lock of ``out``."""
    removed = _remove_stale_temps(
        {osp.join(out, osp.dirname(m)) for m in members})
    if removed:
        print_log(f'removed {removed} partial file(s) of an interrupted run',
                  'current')
    bar = None
    if progress:
        from mmengine.utils import ProgressBar
        per_split = ', '.join(f'{s}: {n} annotated frames'
                              for s, n in counts.items())
        print_log(f'{len(members)} files needed ({per_split})', 'current')
        bar = ProgressBar(len(members))
    extracted, skipped, written = _extract(index, members, out, key_frames,
                                           bar)
    if bar is not None:
        print()
    labels = (0, 0)
    if label_train_ids:
        labels = create_label_train_ids(
            out, list(offsets), workers=workers, progress=progress)
    return dict(
        key_frames=dict(counts),
        members=len(members),
        extracted=extracted,
        skipped=skipped,
        bytes_written=written,
        stale_temps_removed=removed,
        label_train_ids=dict(created=labels[0], existing=labels[1]))


def check(out: str, offsets: Dict[str, Sequence[int]]) -> List[str]:
    """Files of a prepared tree that are missing or bad for the clips of
    ``offsets``.

    The annotated frames are those of ``out/gtFine/{split}`` (polygon or
    labelTrainIds files); for each, the frames at the offsets (and itself)
    in ``leftImg8bit_sequence`` and its labelTrainIds file must exist and
    decode, with the annotated frame's size (the labelTrainIds file: one
    channel).

    Returns:
        list[str]: A missing file as its path; a bad one as ``path (what is
        wrong)``; a split without any annotation as its ``gtFine`` folder.
    """
    problems = []

    def decoded(path: str, expected=None, gray=False):
        """Size of a decodable image, recording a problem otherwise."""
        if not osp.isfile(path):
            problems.append(path)
            return None
        try:
            size = _decode_image(path, path)
            if gray:
                mode = _image_mode(path)
                if mode not in ('L', 'P', 'I', 'I;16'):
                    raise PrepError(f'{path} has mode {mode}, not one '
                                    'channel of class ids')
        except PrepError as exc:
            problems.append(f'{path} ({exc})')
            return None
        if expected is not None and size != expected:
            problems.append(f'{path} ({_size_text(size)}, expected '
                            f'{_size_text(expected)} as its annotated '
                            'frame)')
        return size

    for split, offs in offsets.items():
        folder = osp.join(out, GT_DIR, split)
        keys = set()
        for pattern in (POLYGONS, TRAIN_IDS):
            for path in glob.glob(osp.join(folder, '*', '*' + pattern)):
                city = osp.basename(osp.dirname(path))
                keys.add(f'{city}/{osp.basename(path)[:-len(pattern)]}')
        if not keys:
            problems.append(
                f'{folder}{os.sep} (no *{POLYGONS} or *{TRAIN_IDS}: gtFine '
                f'of split {split} missing)')
            continue
        offs = sorted(set(int(o) for o in offs) | {0})
        for key in sorted(keys):
            size = decoded(osp.join(out, _frame_name(split, key, 0)))
            for offset in offs:
                if offset != 0:
                    decoded(osp.join(out, _frame_name(split, key, offset)),
                            size)
            decoded(osp.join(folder, key + TRAIN_IDS), size, gray=True)
    return problems


def _image_mode(path: str) -> str:
    from PIL import Image
    with Image.open(path) as img:
        return img.mode


def _dataset_cfgs(cfg):
    """Every dataset config under a dataloader's ``dataset`` (wrappers
    followed)."""
    if cfg is None or not hasattr(cfg, 'get'):
        return
    if cfg.get('frame_offsets') is not None or 'data_prefix' in cfg:
        yield cfg
    inner = cfg.get('dataset')
    if inner is not None:
        yield from _dataset_cfgs(inner)
    for item in cfg.get('datasets') or []:
        yield from _dataset_cfgs(item)


def offsets_from_config(config) -> Tuple[Dict[str, List[int]], Optional[str]]:
    """The frame offsets per split of a config's video datasets.

    Every ``train/val/test_dataloader`` dataset with ``frame_offsets``
    counts; its split is the last folder of ``data_prefix.img_path``. A
    ``train_offsets_sampler`` (outside ``test_mode``) adds the offsets times
    each of its strides.

    Args:
        config (str | mmengine.Config): The config.

    Returns:
        tuple: split -> sorted offsets, and the first ``data_root`` found.

    Raises:
        ValueError: The config has no video dataset with ``frame_offsets``.
    """
    from mmengine.config import Config
    name = config if isinstance(config, str) else config.filename
    if isinstance(config, str):
        config = Config.fromfile(config)
    offsets: Dict[str, set] = OrderedDict()
    data_root = None
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = config.get(key)
        if not loader:
            continue
        for ds in _dataset_cfgs(loader.get('dataset')):
            offs = ds.get('frame_offsets')
            if offs is None:
                continue
            img_path = str((ds.get('data_prefix') or {}).get('img_path', ''))
            split = osp.basename(img_path.rstrip('/'))
            if not split:
                continue
            data_root = data_root or ds.get('data_root')
            wanted = {int(o) for o in offs}
            sampler = ds.get('train_offsets_sampler')
            if sampler and not ds.get('test_mode', False):
                for stride in sampler.get('strides', ()):
                    wanted |= {int(o) * int(stride) for o in offs}
            offsets.setdefault(split, set()).update(wanted)
    if not offsets:
        raise ValueError(
            f'config {name} has no video dataset with frame_offsets and a '
            'data_prefix.img_path ending in the split folder')
    return {s: sorted(o) for s, o in offsets.items()}, data_root


def log_summary(summary: dict, logger='current') -> None:
    """Log what :func:`prepare` did, bytes written against the archives."""
    gb = 1024**3
    print_log(
        f'extracted {summary["extracted"]} files, {summary["skipped"]} '
        f'already complete; wrote {summary["bytes_written"] / gb:.3f} GiB '
        f'({summary["bytes_written"]} bytes) out of '
        f'{summary["archive_bytes"] / gb:.3f} GiB of archives '
        f'({summary["archive_bytes"]} bytes); labelTrainIds: '
        f'{summary["label_train_ids"]["created"]} created, '
        f'{summary["label_train_ids"]["existing"]} already there',
        logger,
        level=logging.INFO)
