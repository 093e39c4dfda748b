"""A short description of a segmentor config for result files."""
from typing import Optional


def _type_name(cfg) -> Optional[str]:
    if cfg is None:
        return None
    t = cfg.get('type') if hasattr(cfg, 'get') else None
    return t if isinstance(t, str) or t is None else getattr(
        t, '__name__', str(t))


def describe_model(model_cfg) -> dict:
    """Method, backbone and memory length of a segmentor config.

    Args:
        model_cfg (dict | mmengine.ConfigDict): The ``model`` field of a
            config.

    Returns:
        dict: ``segmentor`` (type name), ``backbone`` (type name), ``neck``
        (type name or None), ``method`` (``'LMA'`` when the neck keeps a
        memory of past frames, else ``'single-frame'``), ``memory_length``
        (the neck's ``memory_length``, 0 for single-frame models), ``window``
        (the neck's local window or None).
    """
    if model_cfg is None or not hasattr(model_cfg, 'get'):
        raise TypeError(f'describe_model: expected a model config dict, got '
                        f'{type(model_cfg).__name__}')
    neck = model_cfg.get('neck')
    neck_type = _type_name(neck)
    is_memory = bool(neck) and hasattr(neck, 'get') and (
        'memory_length' in neck or neck_type == 'LocalMemoryNeck')
    memory_length = 0
    window = None
    if is_memory:
        memory_length = int(neck.get('memory_length', 3))
        window = neck.get('window', 21)
    return dict(
        segmentor=_type_name(model_cfg),
        backbone=_type_name(model_cfg.get('backbone')),
        neck=neck_type,
        method='LMA' if is_memory else 'single-frame',
        memory_length=memory_length,
        window=window)
