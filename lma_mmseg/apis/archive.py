"""Checks of exported programs before anything loads them.

A ``.pt2`` archive (``torch.export.save``, AOTInductor packages) is a zip
file. Besides JSON and raw tensor bytes it may hold pickles (the sample
inputs, pickled weights or constants, nested ``torch.save`` archives), and
torch's loader unpickles some of them with ``weights_only=False`` (or retries
with it after a refusal), so a tampered pickle would run code on load.
:func:`check_archive` reads every pickle of an archive with
:mod:`pickletools` (nothing is unpickled) and refuses, naming the member,
one that needs more than torch's weights-only loader allows: an opcode it
does not implement, or a global outside its allow-list (torch's own plus
those added with ``torch.serialization.add_safe_globals``). Loading
(:func:`lma_mmseg.apis.export.load_step`) runs it first.

:func:`validate_step_info` checks ``step.json`` (the side car of an export)
against its program: every key a stream needs, with errors that name the
key.

Note that an AOTInductor package holds compiled native code: the pickle
check cannot make an untrusted one safe to run.
"""
import io
import json
import math
import os.path as osp
import pickletools
import zipfile
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

__all__ = [
    'ArchiveError', 'StepInfoError', 'check_archive', 'pickle_globals',
    'program_input_shapes', 'validate_step_info'
]

#: Opcodes that torch's weights-only unpickler implements (protocol 2, as
#: ``torch.save`` writes); any other opcode is refused.
WEIGHTS_ONLY_OPCODES = frozenset(
    {
        'APPEND', 'APPENDS', 'BINFLOAT', 'BINGET', 'BININT', 'BININT1',
        'BININT2', 'BINPERSID', 'BINPUT', 'BINUNICODE', 'BUILD', 'EMPTY_DICT',
        'EMPTY_LIST', 'EMPTY_SET', 'EMPTY_TUPLE', 'GLOBAL', 'LONG1',
        'LONG_BINGET', 'LONG_BINPUT', 'MARK', 'NEWFALSE', 'NEWOBJ', 'NEWTRUE',
        'NONE', 'PROTO', 'REDUCE', 'SETITEM', 'SETITEMS', 'SHORT_BINSTRING',
        'STOP', 'TUPLE', 'TUPLE1', 'TUPLE2', 'TUPLE3'
    })
_ZIP_MAGIC = b'PK\x03\x04'
_PICKLE_SUFFIXES = ('.pkl', '.pt', '.pth')
#: Members of a ``.pt2`` archive that torch's loader hands to ``torch.load``
#: or ``pickle.loads`` whatever their first bytes.
_PICKLED_FOLDERS = ('data/sample_inputs/', )
_PICKLED_PREFIXES = ('custom_obj', 'opaque_obj')


class ArchiveError(ValueError):
    """An archive is refused (not a zip, or a pickle that needs more than
    the weights-only loader); the message names the archive and member."""


class StepInfoError(ValueError):
    """``step.json`` of an export is malformed; the message names the file
    and the key."""


def _allowed_globals() -> Set[str]:
    """``module.name`` of every global torch's weights-only loader accepts
    now (its own allow-list and the safe globals added by the process)."""
    from torch import _weights_only_unpickler as wou
    return set(wou._get_allowed_globals()) | set(
        wou._get_user_allowed_globals())


def _blocked_modules() -> Set[str]:
    from torch import _weights_only_unpickler as wou
    return set(getattr(wou, '_blocklisted_modules', ()))


def pickle_globals(data: bytes, where: str) -> Set[str]:
    """Read one pickle without unpickling it and check it against the
    weights-only loader.

    Args:
        data (bytes): The pickle (one, up to its ``STOP``).
        where (str): The member, as messages name it
            (``archive.pt2:member``).

    Returns:
        set[str]: The globals (``module.name``) the pickle uses.

    Raises:
        ArchiveError: The pickle is malformed, uses an opcode the
            weights-only loader does not implement, or a global outside its
            allow-list; the message names ``where`` and what was refused.
    """
    from torch._utils import IMPORT_MAPPING, NAME_MAPPING
    allowed, blocked = _allowed_globals(), _blocked_modules()
    found: Set[str] = set()
    try:
        for opcode, arg, pos in pickletools.genops(io.BytesIO(data)):
            if opcode.name not in WEIGHTS_ONLY_OPCODES:
                raise ArchiveError(
                    f'{where}: refused: the pickle uses opcode '
                    f'{opcode.name} (at byte {pos}), which the weights-only '
                    'loader does not allow; the archive was tampered with or '
                    'holds more than tensors')
            if opcode.name == 'GLOBAL':
                module, _, name = str(arg).partition(' ')
                if (module, name) in NAME_MAPPING:
                    module, name = NAME_MAPPING[(module, name)]
                elif module in IMPORT_MAPPING:
                    module = IMPORT_MAPPING[module]
                full = f'{module}.{name}'
                if module in blocked or full not in allowed:
                    raise ArchiveError(
                        f'{where}: refused: the pickle needs {full}, which '
                        'the weights-only loader does not allow; the archive '
                        'was tampered with or holds more than tensors')
                found.add(full)
    except ArchiveError:
        raise
    except Exception as exc:  # pickletools: ValueError, UnicodeDecodeError
        raise ArchiveError(
            f'{where}: refused: not a readable pickle '
            f'({type(exc).__name__}: {exc})') from exc
    return found


def _is_whole_pickle(data: bytes) -> bool:
    """Whether ``data`` starts like a pickle (protocol 2 or later) and
    parses as one up to its ``STOP``."""
    if data[:1] != b'\x80' or len(data) < 2 or not 2 <= data[1] <= 5:
        return False
    try:
        for _ in pickletools.genops(io.BytesIO(data)):
            pass
    except Exception:
        return False
    return True


def _payload_files(zf: zipfile.ZipFile,
                   root: str) -> Tuple[Set[str], Set[str]]:
    """Members of a ``.pt2`` archive that its payload configs declare raw
    tensor bytes and pickles (``data/{weights,constants}/*_config.json``)."""
    raw, pickled = set(), set()
    for info in zf.infolist():
        name = info.filename
        rel = name[len(root):]
        if not (rel.startswith(('data/weights/', 'data/constants/'))
                and rel.endswith('_config.json')):
            continue
        try:
            config = json.loads(zf.read(info)).get('config') or {}
            entries = list(config.values())
        except (ValueError, AttributeError, TypeError) as exc:
            raise ArchiveError(
                f'{zf.filename}:{name}: not a payload config '
                f'({exc})') from exc
        folder = osp.dirname(name)
        for entry in entries:
            if not isinstance(entry, dict) or \
                    not isinstance(entry.get('path_name'), str):
                raise ArchiveError(
                    f'{zf.filename}:{name}: malformed entry '
                    f'{entry!r}')
            member = f'{folder}/{entry["path_name"]}'
            (pickled if entry.get('use_pickle') else raw).add(member)
    return raw, pickled


def _archive_root(zf: zipfile.ZipFile) -> str:
    """The folder every member of a ``.pt2`` archive starts with
    (``archive/`` or the model name), '' when there is none."""
    names = zf.namelist()
    tops = {n.split('/', 1)[0] for n in names if '/' in n}
    return f'{tops.pop()}/' if len(tops) == 1 else ''


def _iter_pickles(data: bytes, where: str) -> Iterator[Tuple[bytes, str]]:
    """The pickles of a member: the ``*.pkl`` records of a nested zip
    (``torch.save``'s format), or the member itself."""
    if data[:4] == _ZIP_MAGIC:
        try:
            inner = zipfile.ZipFile(io.BytesIO(data))
            infos = inner.infolist()
        except (zipfile.BadZipFile, EOFError, ValueError) as exc:
            raise ArchiveError(
                f'{where}: refused: a nested archive that cannot be read '
                f'({exc})') from exc
        for info in infos:
            # torch.load unpickles the *.pkl records; the others are storages
            if info.filename.endswith('.pkl'):
                yield from _iter_pickles(
                    inner.read(info), f'{where}:{info.filename}')
        return
    yield data, where


def _open_zip(path: str) -> zipfile.ZipFile:
    """Open a .pt2 archive; an unreadable one is an :class:`ArchiveError`
    naming it."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ArchiveError(
            f'{path}: not a readable .pt2 (zip) archive ({exc})') from exc


def check_archive(path: str) -> Dict[str, Set[str]]:
    """Refuse an archive whose pickles need more than torch's weights-only
    loader, before torch's loader sees it.

    Every member is inspected: JSON and the raw tensor bytes its payload
    configs declare are data; nested zips (``torch.save``'s format) are
    opened and their ``*.pkl`` records read; members that start like a
    pickle, end in ``.pkl``/``.pt``/``.pth``, are declared pickled, or sit
    where torch's loader unpickles (the sample inputs, custom and opaque
    objects) must be pickles the weights-only loader accepts. Nothing is
    unpickled.

    Args:
        path (str): The ``.pt2`` file.

    Returns:
        dict[str, set[str]]: The inspected pickles (``archive:member``) and
        the globals each uses.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ArchiveError: ``path`` is not a zip archive, or a pickle is refused;
            the message names the member.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'archive {path!r} not found')
    zf = _open_zip(path)
    inspected: Dict[str, Set[str]] = {}
    with zf:
        root = _archive_root(zf)
        raw, pickled = _payload_files(zf, root)
        for info in zf.infolist():
            name = info.filename
            if name.endswith('/') or name.endswith('.json') or name in raw:
                continue
            rel = name[len(root):]
            try:
                data = zf.read(info)
            except (zipfile.BadZipFile, EOFError, OSError, ValueError,
                    NotImplementedError) as exc:
                raise ArchiveError(
                    f'{path}:{name}: cannot be read '
                    f'({exc})') from exc
            must = (
                name in pickled or name.endswith(_PICKLE_SUFFIXES)
                or rel.startswith(_PICKLED_FOLDERS)
                or osp.basename(rel).startswith(_PICKLED_PREFIXES))
            if must and not data:
                continue  # an empty payload (no sample inputs)
            if must and data[:4] != _ZIP_MAGIC and not \
                    osp.basename(rel).startswith('opaque_obj'):
                # torch.load would read it as a legacy sequence of pickles
                raise ArchiveError(
                    f'{path}:{name}: refused: torch\'s loader unpickles this '
                    'member and it is not in torch.save\'s zip format')
            if not must:
                # other members are text or raw bytes; one that is a whole
                # pickle (or a torch.save archive) is checked all the same
                if data[:4] != _ZIP_MAGIC and not _is_whole_pickle(data):
                    continue
            for pkl, where in _iter_pickles(data, f'{path}:{name}'):
                inspected[where] = pickle_globals(pkl, where)
    return inspected


def program_input_shapes(path: str) -> List[List[int]]:
    """The shapes of the user inputs of a ``torch.export`` program, read from
    its serialized graph (JSON; nothing is unpickled).

    Args:
        path (str): A ``.pt2`` file of ``torch.export.save``.

    Returns:
        list[list[int]]: One shape per user input, in call order.

    Raises:
        ArchiveError: The archive holds no program, or one whose inputs are
            not tensors of static shapes; the message names the member.
    """
    zf = _open_zip(path)
    with zf:
        root = _archive_root(zf)
        models = [
            n for n in zf.namelist()
            if n[len(root):].startswith('models/') and n.endswith('.json')
        ]
        if len(models) != 1:
            raise ArchiveError(
                f'{path}: expected one program '
                f'({root}models/*.json), found {models}')
        where = f'{path}:{models[0]}'
        try:
            program = json.loads(zf.read(models[0]))
            module = program['graph_module']
            values = module['graph']['tensor_values']
            shapes = []
            for spec in module['signature']['input_specs']:
                if 'user_input' not in spec:
                    continue
                name = spec['user_input']['arg']['as_tensor']['name']
                shapes.append(
                    [int(s['as_int']) for s in values[name]['sizes']])
        except (ValueError, KeyError, TypeError) as exc:
            raise ArchiveError(
                f'{where}: cannot read the input shapes of the program '
                f'({type(exc).__name__}: {exc})') from exc
    return shapes


# ---------------------------------------------------------------- step.json
def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool)
        and math.isfinite(value))


def _shape(value,
           key: str,
           where: str,
           ndim: Optional[int] = None) -> List[int]:
    """A shape: a list of positive sizes (``[]`` for a scalar)."""
    if not isinstance(value, list) or \
            not all(_is_int(v) and v > 0 for v in value):
        raise StepInfoError(
            f'{where}: {key} must be a list of positive '
            f'sizes, got {value!r}')
    if ndim is not None and len(value) != ndim:
        raise StepInfoError(
            f'{where}: {key} must have {ndim} sizes, got '
            f'{value!r}')
    return value


def _channel_values(info: dict, key: str, where: str, positive: bool) -> None:
    value = info.get(key)
    if value is None:
        return
    if not isinstance(value, list) or len(value) != 3 or \
            not all(_is_number(v) and (v > 0 or not positive)
                    for v in value):
        what = 'positive finite numbers' if positive else 'finite numbers'
        raise StepInfoError(
            f'{where}: {key} must be 3 {what} (one per '
            f'colour channel), got {value!r}')


def validate_step_info(
        info: dict,
        program_dir: Optional[str] = None,
        program_shapes: Optional[Sequence[Sequence[int]]] = None) -> dict:
    """Check ``step.json`` of an export, against its program when known.

    Checked: ``input_shape`` ``[B, 3, H, W]`` of positive sizes;
    ``memory_shapes`` lists of positive sizes (``[]`` for a scalar), with
    ``memory_dtypes`` (if present) one torch dtype name each;
    ``memory_length`` and ``num_classes`` positive ints; ``mean`` (if set)
    3 finite numbers, ``std`` (if set) 3 positive finite numbers;
    ``memory_offsets`` (if present) ``memory_length`` distinct negative
    ints, ``memory_span`` (if present) their largest distance;
    ``bgr_to_rgb`` a bool; ``classes`` (if any) ``num_classes`` names;
    ``palette`` RGB triples in [0, 255]. The program's input shapes
    (``program_shapes``, else read from ``program_dir/step.pt2`` when it
    exists) must equal ``[input_shape] + memory_shapes``.

    Args:
        info (dict): The parsed ``step.json``.
        program_dir (str, optional): The export folder (for messages and the
            program).
        program_shapes (Sequence[Sequence[int]], optional): The program's
            input shapes (see :func:`program_input_shapes`).

    Returns:
        dict: ``info``, unchanged.

    Raises:
        StepInfoError: A key is missing or wrong; the message names the file
            and the key.
    """
    where = osp.join(program_dir, 'step.json') if program_dir else 'step.json'
    if not isinstance(info, dict):
        raise StepInfoError(
            f'{where}: must hold a JSON object, got '
            f'{type(info).__name__}')
    for key in ('input_shape', 'memory_shapes', 'memory_length',
                'num_classes'):
        if key not in info:
            raise StepInfoError(f'{where}: key {key!r} is missing')
    channels = _shape(info['input_shape'], 'input_shape', where, ndim=4)[1]
    if channels != 3:
        raise StepInfoError(
            f'{where}: input_shape must be [B, 3, H, W] '
            f'(3 colour channels), got {info["input_shape"]}')
    memory = info['memory_shapes']
    if not isinstance(memory, list) or not memory:
        raise StepInfoError(
            f'{where}: memory_shapes must be a non-empty '
            f'list of shapes, got {memory!r}')
    for i, shape in enumerate(memory):
        _shape(shape, f'memory_shapes[{i}]', where)
    if 'memory_dtypes' in info:
        import torch
        dtypes = info['memory_dtypes']
        if not isinstance(dtypes, list) or len(dtypes) != len(memory) or \
                not all(isinstance(d, str) and isinstance(
                    getattr(torch, d, None), torch.dtype) for d in dtypes):
            raise StepInfoError(
                f'{where}: memory_dtypes must be {len(memory)} torch dtype '
                f'names (one per memory_shapes entry), got {dtypes!r}')
    for key in ('memory_length', 'num_classes', 'memory_span'):
        if key in info and (not _is_int(info[key]) or info[key] < 1):
            raise StepInfoError(
                f'{where}: {key} must be a positive int, '
                f'got {info[key]!r}')
    _channel_values(info, 'mean', where, positive=False)
    _channel_values(info, 'std', where, positive=True)
    if 'memory_offsets' in info:
        offsets = info['memory_offsets']
        if not isinstance(offsets, list) or not offsets or \
                not all(_is_int(o) and o < 0 for o in offsets) or \
                len(set(offsets)) != len(offsets):
            raise StepInfoError(
                f'{where}: memory_offsets must be distinct negative ints '
                f'(frames before the current one), got {offsets!r}')
        if len(offsets) != info['memory_length']:
            raise StepInfoError(
                f'{where}: memory_offsets {offsets} must hold memory_length '
                f'= {info["memory_length"]} offsets')
        if 'memory_span' in info and info['memory_span'] != -min(offsets):
            raise StepInfoError(
                f'{where}: memory_span must be {-min(offsets)}, the oldest '
                f'of memory_offsets {offsets}, got {info["memory_span"]!r}')
    if not isinstance(info.get('bgr_to_rgb', False), bool):
        raise StepInfoError(
            f'{where}: bgr_to_rgb must be true or false, '
            f'got {info["bgr_to_rgb"]!r}')
    classes = info.get('classes') or []
    if not isinstance(classes, list) or not all(
            isinstance(c, str) for c in classes) or \
            (classes and len(classes) != info['num_classes']):
        raise StepInfoError(
            f'{where}: classes must be {info["num_classes"]} '
            f'names (num_classes), got {classes!r}')
    palette = info.get('palette') or []
    if not isinstance(palette, list) or not all(
            isinstance(c, list) and len(c) == 3 and all(
                _is_int(v) and 0 <= v <= 255 for v in c) for c in palette):
        raise StepInfoError(
            f'{where}: palette must be [R, G, B] triples in '
            f'[0, 255], got {palette!r}')
    if program_shapes is None and program_dir is not None:
        program = osp.join(program_dir, 'step.pt2')
        if osp.isfile(program):
            program_shapes = program_input_shapes(program)
    if program_shapes is not None:
        expected = [list(info['input_shape'])] + [list(s) for s in memory]
        got = [list(s) for s in program_shapes]
        if got != expected:
            raise StepInfoError(
                f'{where}: input_shape and memory_shapes {expected} differ '
                f'from the inputs of the program {got}')
    return info
