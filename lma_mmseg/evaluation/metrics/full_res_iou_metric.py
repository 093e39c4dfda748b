"""IoU of predictions upsampled to the label files' own resolution."""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS

from ...datasets.transforms import LoadClipAnnotations


@METRICS.register_module()
class FullResIoUMetric(IoUMetric):
    """mmseg's :class:`IoUMetric` against the label files at full resolution.

    For models that predict at a working resolution below the labels' (e.g.
    1024x512 frames with ``ResetOriShape``, evaluated there against
    downsampled labels by :class:`IoUMetric`), this metric reads every
    sample's label file again (``seg_map_path``, with the same checks as
    :class:`LoadClipAnnotations`), resizes the predicted label map to the
    label's size by nearest neighbour, as the Local Memory Attention
    authors' full-resolution evaluation does (``--use-orig-res``), and
    accumulates intersections and unions there. Give it a ``prefix`` (e.g.
    ``'full_res'``) so that its keys (``full_res/mIoU``) differ from those
    of an :class:`IoUMetric` in the same evaluator.

    Args:
        **kwargs: Arguments of mmseg's :class:`IoUMetric` (``iou_metrics``,
            ``ignore_index``, ``prefix``, ...). ``format_only`` is not
            supported.
    """

    def __init__(self, prefix: Optional[str] = 'full_res', **kwargs) -> None:
        if kwargs.get('format_only'):
            raise ValueError(f'{type(self).__name__} compares with label '
                             'files; format_only is not supported')
        super().__init__(prefix=prefix, **kwargs)
        self._loader = LoadClipAnnotations(ignore_index=self.ignore_index)

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Resize each prediction to its label file and count IoU terms.

        Args:
            data_batch (dict): A batch from the dataloader (unused).
            data_samples (Sequence[dict]): Model outputs with
                ``pred_sem_seg`` and the metainfo ``seg_map_path`` (and
                ``reduce_zero_label``).
        """
        num_classes = len(self.dataset_meta['classes'])
        for data_sample in data_samples:
            path = data_sample.get('seg_map_path')
            if not path:
                raise KeyError(
                    f'{type(self).__name__}: the sample of '
                    f'{data_sample.get("img_path")} has no seg_map_path')
            label = self._loader.transform(
                dict(
                    seg_map_path=path,
                    reduce_zero_label=data_sample.get(
                        'reduce_zero_label', False),
                    num_classes=num_classes))['gt_seg_map']
            label = torch.from_numpy(label)
            pred = data_sample['pred_sem_seg']['data'].squeeze()
            if tuple(pred.shape) != tuple(label.shape):
                pred = F.interpolate(
                    pred[None, None].float(),
                    size=tuple(label.shape),
                    mode='nearest')[0, 0]
            pred = pred.to(torch.int64)
            self.results.append(
                self.intersect_and_union(pred, label.to(pred), num_classes,
                                         self.ignore_index))
