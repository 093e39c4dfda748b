"""Build a segmentor from a config and load a checkpoint with a clear
report of the parameters that did not match."""
import inspect
import logging
import pickle
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch.nn as nn
from mmengine import Config
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import CheckpointLoader
from mmseg.registry import MODELS
from mmseg.utils import dataset_aliases, get_classes, get_palette

from ..models.segmentors.video_encoder_decoder import (is_memory_model,
                                                       parse_memory_offsets)

NUM_EXAMPLES = 5


def _examples(keys: List[str], num: int = NUM_EXAMPLES) -> str:
    shown = ', '.join(keys[:num])
    return shown + (f', ... ({len(keys) - num} more)'
                    if len(keys) > num else '')


def _state_dict_of(checkpoint, filename: str) -> Dict:
    """The state dict inside a loaded checkpoint, without wrapper
    prefixes."""
    if not isinstance(checkpoint, dict):
        raise ValueError(f'checkpoint {filename!r} holds a '
                         f'{type(checkpoint).__name__}, not a state dict')
    state_dict = checkpoint.get('state_dict', checkpoint)
    if not isinstance(state_dict, dict) or not state_dict:
        raise ValueError(f'checkpoint {filename!r} holds no parameters')
    metadata = getattr(state_dict, '_metadata', None)
    state_dict = type(state_dict)(
        (re.sub(r'^module\.', '', k), v) for k, v in state_dict.items())
    if metadata is not None:
        state_dict._metadata = metadata
    return state_dict


def load_checkpoint_checked(model: nn.Module,
                            filename: str,
                            map_location: str = 'cpu',
                            strict: bool = False,
                            logger: Union[str, logging.Logger] = 'current'
                            ) -> dict:
    """Load a checkpoint into ``model`` and report every mismatch.

    The checkpoint is read with mmengine's :class:`CheckpointLoader` (local
    paths, URLs, ``open-mmlab://`` ...); a ``module.`` prefix is removed.
    Parameters whose shapes differ from the model's are not loaded. The
    numbers of loaded, missing, unexpected and shape-mismatched keys are
    logged with examples (a warning when anything did not match). Modules
    that remap keys in ``_load_from_state_dict`` are honoured.

    Args:
        model (nn.Module): The model (wrappers are unwrapped).
        filename (str): Checkpoint path or URL.
        map_location (str): Where to map the tensors. Defaults to 'cpu'.
        strict (bool): Raise when any key is missing, unexpected or has
            another shape. The model may then be partly loaded.
            Defaults to False.
        logger (str | logging.Logger): Where to log the report.

    Returns:
        dict: The loaded checkpoint.

    Raises:
        FileNotFoundError: ``filename`` is a local path that does not exist.
        pickle.UnpicklingError: The checkpoint holds a pickled object that
            torch's weights-only loader refuses; the message names the file.
        ValueError: No parameter of the checkpoint matches the model, or
            ``strict`` and something does not match. The message names the
            checkpoint and gives examples of the offending keys.
    """
    if is_model_wrapper(model):
        model = model.module
    filename = str(filename)
    if '://' not in filename and not Path(filename).is_file():
        raise FileNotFoundError(f'checkpoint file {filename!r} not found')
    try:
        checkpoint = CheckpointLoader.load_checkpoint(filename, map_location)
    except pickle.UnpicklingError as err:
        raise pickle.UnpicklingError(
            f'checkpoint {filename!r} was refused by the weights-only '
            f'loader: {err}') from err
    state_dict = _state_dict_of(checkpoint, filename)

    own = model.state_dict()
    mismatched = [
        f'{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}'
        for k, v in state_dict.items()
        if k in own and hasattr(v, 'shape') and v.shape != own[k].shape
    ]
    mismatched_keys = {m.split(' ')[0] for m in mismatched}
    filtered = type(state_dict)(
        (k, v) for k, v in state_dict.items() if k not in mismatched_keys)
    if hasattr(state_dict, '_metadata'):
        filtered._metadata = state_dict._metadata

    missing, unexpected, errors = [], [], []

    def load(module: nn.Module, local_state: dict, prefix: str = '') -> None:
        meta = getattr(filtered, '_metadata', None) or {}
        module._load_from_state_dict(local_state, prefix,
                                     meta.get(prefix[:-1], {}), True,
                                     missing, unexpected, errors)
        for name, child in module._modules.items():
            if child is not None:
                child_prefix = prefix + name + '.'
                load(child, {
                    k: v
                    for k, v in local_state.items()
                    if k.startswith(child_prefix)
                }, child_prefix)

    load(model, filtered)
    missing = [
        k for k in missing
        if 'num_batches_tracked' not in k and k not in mismatched_keys
    ]
    counted = [k for k in own if 'num_batches_tracked' not in k]
    loaded = (len(counted) - len(missing) -
              len(mismatched_keys.intersection(counted)))

    report = [
        f'checkpoint {filename!r}: loaded {loaded} of {len(counted)} model '
        f'parameters/buffers'
    ]
    if missing:
        report.append(f'{len(missing)} missing in the checkpoint (kept at '
                      f'init): {_examples(missing)}')
    if unexpected:
        report.append(f'{len(unexpected)} unexpected in the checkpoint '
                      f'(ignored): {_examples(unexpected)}')
    if mismatched:
        report.append(f'{len(mismatched)} with another shape (not '
                      f'loaded): {_examples(mismatched)}')
    if errors:
        report.append(f'{len(errors)} load errors: {_examples(errors)}')
    message = '; '.join(report)
    if loaded <= 0:
        raise ValueError(
            f'no parameter of checkpoint {filename!r} matches the model '
            f'{type(model).__name__} (is it from another model?): '
            f'{message}')
    if strict and (missing or unexpected or mismatched or errors):
        raise ValueError(f'strict loading failed: {message}')
    print_log(
        message,
        logger=logger,
        level=logging.WARNING if len(report) > 1 else logging.INFO)
    return checkpoint


def _default_of(registry, cfg: dict, name: str):
    """The default of argument ``name`` of the class ``cfg['type']``."""
    cls = cfg.get('type')
    if isinstance(cls, str):
        cls = registry.get(cls)
    if not inspect.isclass(cls):
        return None
    param = inspect.signature(cls).parameters.get(name)
    if param is None or param.default is inspect.Parameter.empty:
        return None
    return param.default


def _find_frame_offsets(dataset_cfg, where: str
                        ) -> List[Tuple[str, Tuple[int, ...]]]:
    """``(where, frame_offsets)`` of every video dataset in a (possibly
    wrapped) dataset config."""
    from mmseg.registry import DATASETS

    from ..datasets.video_seg_dataset import VideoSegDataset
    found = []
    if isinstance(dataset_cfg, (list, tuple)):
        for i, item in enumerate(dataset_cfg):
            found += _find_frame_offsets(item, f'{where}[{i}]')
        return found
    if not hasattr(dataset_cfg, 'get'):
        return found
    cls = dataset_cfg.get('type')
    if isinstance(cls, str):
        cls = DATASETS.get(cls)
    if inspect.isclass(cls) and issubclass(cls, VideoSegDataset):
        offsets = dataset_cfg.get('frame_offsets')
        if offsets is None:
            offsets = _default_of(DATASETS, dataset_cfg, 'frame_offsets')
        found.append((f'{where}.frame_offsets', tuple(offsets)))
    for key in ('dataset', 'datasets'):
        if key in dataset_cfg:
            found += _find_frame_offsets(dataset_cfg[key], f'{where}.{key}')
    return found


def model_memory_offsets(config: Config) -> Optional[Tuple[int, ...]]:
    """The memory offsets of a config's model: ``model.memory_offsets``, or
    ``(-T, ..., -1)`` with ``T`` the neck's ``memory_length`` (the config's,
    else the neck class's default); None for a model without memory.

    Raises:
        ValueError: ``model.memory_offsets`` is not a sequence of distinct
            negative ints, oldest first; the message names the config.
    """
    model_cfg = config.get('model')
    if not model_cfg or not is_memory_model(model_cfg):
        return None
    offsets = model_cfg.get('memory_offsets')
    if offsets is not None:
        return parse_memory_offsets(
            offsets, f'config {config.filename!r}: model.memory_offsets')
    neck = model_cfg.get('neck') or {}
    memory_length = neck.get('memory_length')
    if memory_length is None:
        memory_length = _default_of(MODELS, neck, 'memory_length')
    if memory_length is None:
        return None
    return tuple(range(-int(memory_length), 0))


def check_memory_offsets(config: Config) -> None:
    """Check that the model reads the memory frames the test clips hold.

    Streaming inference (:meth:`VideoEncoderDecoder.step`) reads the frames
    at the model's memory offsets (``model.memory_offsets``, or
    ``(-T, ..., -1)`` with ``T = model.neck.memory_length``); clip-mode
    testing reads the frames at the test dataset's ``frame_offsets``. Both
    must be the same offsets, or the test scores describe another model
    than the one deployed. Only the test set is checked: validation clips
    may use other offsets than testing (for model selection; e.g. the
    authors' LMA-ERFNet picks its best epoch with T=3 memory frames and is
    tested and deployed with T=4). Configs whose model keeps no memory, or
    without a video test dataset, pass.

    Args:
        config (Config): The config (``model`` and ``test_dataloader``).

    Raises:
        ValueError: The offsets differ; the message names both.
    """
    offsets = model_memory_offsets(config)
    if offsets is None:
        return
    loader = config.get('test_dataloader')
    if not loader or not hasattr(loader, 'get'):
        return
    model_cfg = config.model
    source = ('model.memory_offsets'
              if model_cfg.get('memory_offsets') is not None else
              f'model.neck.memory_length={len(offsets)}')
    for where, frame_offsets in _find_frame_offsets(
            loader.get('dataset'), 'test_dataloader.dataset'):
        if tuple(frame_offsets) != offsets:
            raise ValueError(
                f'config {config.filename!r}: the model reads memory frames '
                f'at memory_offsets={offsets} in streaming (from {source}) '
                f'but the test clips hold {where}={tuple(frame_offsets)}; '
                f'set both to the same offsets (model.memory_offsets and '
                f'the test dataset\'s frame_offsets)')


def _set_dataset_meta(model: nn.Module, checkpoint: Optional[dict]) -> None:
    """Classes and palette from the checkpoint, else from the number of
    classes (as mmseg's ``init_model`` does)."""
    meta = (checkpoint or {}).get('meta', {}) or {}
    if 'dataset_meta' in meta:
        model.dataset_meta = meta['dataset_meta']
        return
    if 'CLASSES' in meta:
        model.dataset_meta = dict(
            classes=meta['CLASSES'], palette=meta.get('PALETTE'))
        return
    num_classes = model.decode_head.num_classes
    dataset_name = next(
        (name for name in dataset_aliases
         if len(get_classes(name)) == num_classes), 'cityscapes')
    model.dataset_meta = dict(
        classes=get_classes(dataset_name), palette=get_palette(dataset_name))


def init_model(config: Union[str, Path, Config],
               checkpoint: Optional[str] = None,
               device: str = 'cpu',
               cfg_options: Optional[dict] = None,
               strict: bool = False) -> nn.Module:
    """Build a segmentor (ours or any mmseg one) from a config for inference.

    Like :func:`mmseg.apis.init_model`: pretrained backbone weights named in
    the config are not fetched, ``train_cfg`` is dropped, the model is moved
    to ``device`` and put in eval mode, ``model.cfg`` keeps the config and
    ``model.dataset_meta`` the classes and palette (from the checkpoint, or
    guessed from the number of classes). The checkpoint is loaded with
    :func:`load_checkpoint_checked`, which logs missing / unexpected keys
    and raises a ``ValueError`` naming the file when nothing matches. The
    memory offsets of a memory model must be the test set's
    (:func:`check_memory_offsets`).

    Args:
        config (str | Path | Config): Config file or object.
        checkpoint (str, optional): Checkpoint path or URL. None keeps the
            freshly initialised weights.
        device (str): Device, e.g. 'cpu' or 'cuda:0'. Defaults to 'cpu'.
        cfg_options (dict, optional): Overrides merged into the config.
        strict (bool): Fail on any key mismatch. Defaults to False.

    Returns:
        nn.Module: The segmentor in eval mode.
    """
    if isinstance(config, (str, Path)):
        if not Path(config).is_file():
            raise FileNotFoundError(f'config file {str(config)!r} not found')
        config = Config.fromfile(str(config))
    elif not isinstance(config, Config):
        raise TypeError(f'`config` must be a file name or a Config, got '
                        f'{type(config).__name__}')
    else:
        config = config.copy()
    if cfg_options is not None:
        config.merge_from_dict(cfg_options)
    if 'model' not in config:
        raise ValueError(f'config {config.filename!r} has no `model`')
    # Do not fetch pretrained weights for inference.
    for value in config.model.values():
        if isinstance(value, dict) and value.get('init_cfg') is not None:
            value.init_cfg = None
    config.model.pretrained = None
    config.model.train_cfg = None
    init_default_scope(config.get('default_scope', 'mmseg'))

    check_memory_offsets(config)
    model = MODELS.build(config.model)
    loaded = None
    if checkpoint is not None:
        loaded = load_checkpoint_checked(
            model, checkpoint, map_location='cpu', strict=strict)
    _set_dataset_meta(model, loaded)
    model.cfg = config
    model.to(device)
    model.eval()
    return model
