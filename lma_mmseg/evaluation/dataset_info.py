"""What a dataset config evaluates: its classes, whether it is Cityscapes."""
from typing import Optional, Tuple

from mmseg.datasets import CityscapesDataset
from mmseg.registry import DATASETS

CITYSCAPES_CLASSES = tuple(CityscapesDataset.METAINFO['classes'])


def dataset_classes(dataset_cfg) -> Optional[Tuple[str, ...]]:
    """The class names of a dataset config, without building the dataset.

    Taken from ``metainfo.classes`` when the config sets it, else from the
    ``METAINFO`` of the registered dataset type (e.g. ``VSPWDataset``);
    wrappers (``dataset=dict(...)``) are followed. None when unknown.
    """
    if dataset_cfg is None or not hasattr(dataset_cfg, 'get'):
        return None
    metainfo = dataset_cfg.get('metainfo') or {}
    if metainfo.get('classes'):
        return tuple(metainfo['classes'])
    kind = dataset_cfg.get('type')
    cls = DATASETS.get(kind) if isinstance(kind, str) else kind
    classes = getattr(cls, 'METAINFO', {}).get('classes') if cls else None
    if classes:
        return tuple(classes)
    inner = dataset_cfg.get('dataset')
    if inner is not None:
        return dataset_classes(inner)
    return None


def is_cityscapes_dataset(dataset_cfg) -> bool:
    """Whether the dataset config has the 19 Cityscapes classes (trainId
    order); True when its classes cannot be told."""
    classes = dataset_classes(dataset_cfg)
    return classes is None or classes == CITYSCAPES_CLASSES
