# Copyright (c) lma_mmseg contributors. All rights reserved.
from typing import Optional

from mmseg.registry import TRANSFORMS

from .loading import LoadClipAnnotations


@TRANSFORMS.register_module()
class LoadCheckedAnnotations(LoadClipAnnotations):
    """mmseg's ``LoadAnnotations`` for single-frame pipelines, with the label
    checks of the video pipelines: a missing or corrupt label file, one with
    more than one channel, and values outside ``[0, num_classes)`` other
    than ``ignore_index`` raise errors that name the file (mmseg's loader
    passes such values on, and ``IoUMetric`` then counts them silently).

    ``reduce_zero_label`` and ``label_map`` of the data info are applied as
    mmseg does, before the check. The class count comes from ``num_classes``
    or else from the data info (set by :class:`VideoSegDataset`, also for
    its single-frame samples); unlike :class:`LoadClipAnnotations`, a label
    whose class count is unknown is refused rather than loaded unchecked.

    Required Keys: ``seg_map_path`` (nothing is loaded when it is ``None``,
    e.g. on an unlabelled test split); ``num_classes`` unless given here;
    optional ``reduce_zero_label``, ``label_map``.

    Added Keys: ``gt_seg_map`` (H, W) uint8; ``seg_fields`` gets
    ``'gt_seg_map'``.

    Args:
        num_classes (int, optional): Number of classes. Defaults to None
            (from the data info).
        ignore_index (int): The label value ignored by the loss and metrics.
            Defaults to 255.
        imdecode_backend (str): mmcv image decoding backend. Defaults to
            ``'pillow'`` as mmseg's ``LoadAnnotations``.
        backend_args (dict, optional): File backend arguments.
    """

    def __init__(
            self,
            num_classes: Optional[int] = None,
            ignore_index: int = 255,
            imdecode_backend: str = 'pillow',
            backend_args: Optional[dict] = None) -> None:
        if num_classes is not None and (isinstance(num_classes, bool)
                                        or not isinstance(num_classes, int)
                                        or num_classes < 1):
            raise ValueError(
                f'LoadCheckedAnnotations: num_classes must be '
                f'a positive int, got {num_classes!r}')
        super().__init__(
            num_classes=num_classes,
            ignore_index=ignore_index,
            imdecode_backend=imdecode_backend,
            backend_args=backend_args)

    def transform(self, results: dict) -> dict:
        """Load and check the label (nothing when ``seg_map_path`` is
        ``None``)."""
        if results.get('seg_map_path') is not None and \
                not (self.num_classes or results.get('num_classes')):
            raise KeyError(
                f'LoadCheckedAnnotations: the class count of label file '
                f"{results['seg_map_path']} is unknown: set num_classes= in "
                'the transform, or use a dataset whose data info carries '
                'num_classes (VideoSegDataset and its subclasses)')
        return super().transform(results)
