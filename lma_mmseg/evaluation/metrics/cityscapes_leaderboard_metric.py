"""Cityscapes benchmark-style metric: class and category IoU, test export."""
import os.path as osp
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.logging import MMLogger, print_log
from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import METRICS
from prettytable import PrettyTable

from ...fileio import atomic_write_json, atomic_write_png, atomic_write_zip

#: ``kind`` of the results JSON (``results_file``).
TEST_KIND = 'lma_mmseg.test'

try:
    import cityscapesscripts.helpers.labels as CSLabels
except ImportError:  # pragma: no cover - listed in install_requires
    CSLabels = None

#: File name stem of a Cityscapes image: city, sequence, frame, type.
CITYSCAPES_STEM = re.compile(r'^(?P<city>.+?)_(?P<seq>\d{6})_'
                             r'(?P<frame>\d{6})_leftImg8bit$')


def _require_cityscapesscripts():
    if CSLabels is None:
        raise ImportError('CityscapesLeaderboardMetric needs cityscapesscripts'
                          ' (pip install cityscapesscripts)')


def cityscapes_label_tables(
        class_names: Sequence[str]) -> Tuple[np.ndarray, 'OrderedDict']:
    """Label ids and categories of the classes, from cityscapesscripts.

    The i-th class must be the Cityscapes label whose ``trainId`` is i (the
    order of mmseg's ``CityscapesDataset``); names are checked against
    ``cityscapesscripts.helpers.labels``.

    Args:
        class_names (Sequence[str]): ``dataset_meta['classes']``.

    Returns:
        tuple: ``label_ids`` (np.ndarray, (num_classes,), uint8): the
        Cityscapes ``labelId`` of every trainId; ``categories``
        (OrderedDict[str, list[int]]): category name -> trainIds, in the
        order of cityscapesscripts' ``category2labels``, categories without
        an evaluated class (``void``) left out.
    """
    _require_cityscapesscripts()
    label_ids = []
    for train_id, name in enumerate(class_names):
        label = CSLabels.trainId2label.get(train_id)
        if label is None or label.ignoreInEval or label.name != name:
            expected = label.name if label is not None else None
            raise ValueError(
                'CityscapesLeaderboardMetric: dataset class '
                f'{train_id} is {name!r} but the Cityscapes label with '
                f'trainId {train_id} is {expected!r}; the dataset classes '
                'must be the 19 Cityscapes classes in trainId order')
        label_ids.append(label.id)
    if len(class_names) != 19:
        raise ValueError('CityscapesLeaderboardMetric: expected the 19 '
                         f'Cityscapes classes, got {len(class_names)}')
    categories = OrderedDict()
    for category, labels in CSLabels.category2labels.items():
        train_ids = sorted({
            lb.trainId
            for lb in labels if not lb.ignoreInEval and 0 <= lb.trainId < 19
        })
        if train_ids:
            categories[category] = train_ids
    return np.asarray(label_ids, dtype=np.uint8), categories


def confusion_matrix(pred: torch.Tensor, gt: torch.Tensor, num_classes: int,
                     ignore_index: int) -> np.ndarray:
    """Confusion matrix of one image, ground truth in rows.

    Args:
        pred (torch.Tensor): (H, W) predicted trainIds.
        gt (torch.Tensor): (H, W) ground-truth trainIds; ``ignore_index``
            pixels are left out.
        num_classes (int): Number of classes.
        ignore_index (int): Ground-truth value to ignore.

    Returns:
        np.ndarray: (num_classes, num_classes) int64, entry [g, p] counts the
        pixels of ground truth g predicted as p.
    """
    if pred.shape != gt.shape:
        raise ValueError(f'prediction shape {tuple(pred.shape)} differs from '
                         f'ground-truth shape {tuple(gt.shape)}')
    mask = gt != ignore_index
    gt = gt[mask].long()
    pred = pred[mask].long()
    if gt.numel():
        if gt.min() < 0 or gt.max() >= num_classes:
            raise ValueError('ground truth holds values outside [0, '
                             f'{num_classes}) other than ignore_index='
                             f'{ignore_index}: [{int(gt.min())}, '
                             f'{int(gt.max())}]')
        if pred.min() < 0 or pred.max() >= num_classes:
            raise ValueError('prediction holds values outside [0, '
                             f'{num_classes}): [{int(pred.min())}, '
                             f'{int(pred.max())}]')
    counts = torch.bincount(
        gt * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu().numpy().astype(
        np.int64)


def category_iou(conf: np.ndarray, train_ids: Sequence[int]) -> float:
    """IoU of a category, computed at category level from the confusion matrix.

    As ``getIouScoreForCategory`` of cityscapesscripts: a pixel is a true
    positive when both ground truth and prediction fall in the category,
    whatever the class inside it.

    Args:
        conf (np.ndarray): (N, N) confusion matrix, ground truth in rows.
        train_ids (Sequence[int]): The classes of the category.

    Returns:
        float: IoU in [0, 1], NaN when the category is absent from both.
    """
    ids = list(train_ids)
    tp = conf[np.ix_(ids, ids)].sum()
    fn = conf[ids, :].sum() - tp
    fp = conf[:, ids].sum() - tp
    denom = tp + fp + fn
    return float(tp) / float(denom) if denom else float('nan')


def _pct(value) -> Optional[float]:
    """Fraction -> percent rounded to 2 decimals; NaN -> None (JSON null)."""
    value = float(value)
    return None if np.isnan(value) else round(value * 100, 2)


@METRICS.register_module()
class CityscapesLeaderboardMetric(IoUMetric):
    """Cityscapes benchmark metric: class IoU/Acc, mIoU, aAcc, category IoU.

    Extends mmseg's :class:`IoUMetric`. Each image contributes a confusion
    matrix over the 19 trainIds (ground-truth ``ignore_index`` pixels left
    out); from the summed matrix come the per-class IoU and Acc, mIoU, mAcc
    and aAcc (as mmseg computes them) and the 7 category IoUs (flat,
    construction, object, nature, sky, human, vehicle) computed at category
    level as the Cityscapes benchmark does, with the category of each class
    taken from ``cityscapesscripts.helpers.labels``. Tables are printed with
    the current mmengine logger and everything is written as JSON.

    It reads only ``pred_sem_seg``, ``gt_sem_seg`` and ``img_path`` of the
    data samples, so single-frame and video segmentors are evaluated alike.

    Args:
        ignore_index (int): Ground-truth value left out. Defaults to 255.
        output_dir (str, optional): If given, every prediction is written as a
            Cityscapes ``labelIds`` PNG named
            ``{output_dir}/{city}/{city}_{seq}_{frame}_leftImg8bit.png`` (the
            names the Cityscapes server and cityscapesscripts expect).
        format_only (bool): Only export predictions (test split, no ground
            truth): the PNGs under ``output_dir`` then a zip of them. Needs
            ``output_dir``. Defaults to False.
        submission_zip (str, optional): Zip written when ``format_only``;
            defaults to ``{output_dir}/cityscapes_submission.zip``. Members are
            ``{city}/{file}.png``.
        results_file (str, optional): JSON file for the results. Defaults to
            ``cityscapes_metrics.json`` in the folder of the current mmengine
            logger's log file (the Runner's ``work_dir/{timestamp}``).
        meta (dict, optional): Extra information copied into the JSON under
            ``"meta"`` (config, checkpoint, model description...).
        nan_to_num (int, optional): Not supported (NaN IoUs are left out of
            the means as the Cityscapes benchmark does); must stay None.
        collect_device (str): 'cpu' or 'gpu'. Defaults to 'cpu'.
        prefix (str, optional): Metric name prefix. Defaults to None.
    """

    def __init__(self,
                 ignore_index: int = 255,
                 output_dir: Optional[str] = None,
                 format_only: bool = False,
                 submission_zip: Optional[str] = None,
                 results_file: Optional[str] = None,
                 meta: Optional[dict] = None,
                 nan_to_num: Optional[int] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None,
                 **kwargs) -> None:
        _require_cityscapesscripts()
        if nan_to_num is not None:
            raise ValueError('CityscapesLeaderboardMetric: nan_to_num is not '
                             'supported, classes absent from ground truth and '
                             'prediction are left out of the means')
        if format_only and not output_dir:
            raise ValueError('CityscapesLeaderboardMetric: format_only=True '
                             'needs output_dir')
        super().__init__(
            ignore_index=ignore_index,
            iou_metrics=['mIoU'],
            collect_device=collect_device,
            output_dir=output_dir,
            format_only=format_only,
            prefix=prefix,
            **kwargs)
        self.submission_zip = submission_zip
        if format_only and submission_zip is None:
            self.submission_zip = osp.join(output_dir,
                                           'cityscapes_submission.zip')
        self.results_file = results_file
        self.meta = dict(meta) if meta else {}
        self._tables = None

    def _label_tables(self):
        if self._tables is None:
            self._tables = cityscapes_label_tables(
                list(self.dataset_meta['classes']))
        return self._tables

    @staticmethod
    def submission_name(img_path: str) -> Tuple[str, str]:
        """Cityscapes server name of a key frame's prediction.

        Args:
            img_path (str): Path of the image,
                ``.../{city}_{seq:06d}_{frame:06d}_leftImg8bit.png``.

        Returns:
            tuple[str, str]: ``(city, file name)``, the file name being
            ``{city}_{seq}_{frame}_leftImg8bit.png``.
        """
        stem = osp.splitext(osp.basename(img_path))[0]
        match = CITYSCAPES_STEM.match(stem)
        if match is None:
            raise ValueError(
                f'img_path {img_path!r} is not a Cityscapes image name '
                '({city}_{seq:06d}_{frame:06d}_leftImg8bit.png)')
        return match['city'], f'{stem}.png'

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Accumulate the confusion matrix and export PNGs of one batch.

        Args:
            data_batch (dict): The batch from the dataloader (unused).
            data_samples (Sequence[dict]): Model outputs; ``pred_sem_seg.data``
                is (1, H, W) or (H, W) trainIds, ``gt_sem_seg.data`` the same
                shape (not needed with ``format_only``).
        """
        label_ids, _ = self._label_tables()
        num_classes = len(label_ids)
        for data_sample in data_samples:
            pred = _as_2d(data_sample['pred_sem_seg']['data'])
            if pred is None:
                raise ValueError(
                    'CityscapesLeaderboardMetric: pred_sem_seg of '
                    f'{data_sample.get("img_path")} must be (1, H, W), got '
                    f'{tuple(data_sample["pred_sem_seg"]["data"].shape)}')
            entry = {}
            if not self.format_only:
                if 'gt_sem_seg' not in data_sample:
                    raise KeyError(
                        'CityscapesLeaderboardMetric: data sample of '
                        f'{data_sample.get("img_path")} has no gt_sem_seg; '
                        'use format_only=True for the test split')
                gt = _as_2d(data_sample['gt_sem_seg']['data'])
                if gt is None:
                    raise ValueError(
                        'CityscapesLeaderboardMetric: gt_sem_seg of '
                        f'{data_sample.get("img_path")} must be (1, H, W), '
                        'got '
                        f'{tuple(data_sample["gt_sem_seg"]["data"].shape)}')
                gt = gt.to(pred)
                try:
                    entry['confusion'] = confusion_matrix(
                        pred, gt, num_classes, self.ignore_index)
                except ValueError as e:
                    raise ValueError(f'CityscapesLeaderboardMetric: '
                                     f'{data_sample.get("img_path")}: {e}')
            if self.output_dir:
                img_path = data_sample['img_path']
                city, name = self.submission_name(img_path)
                pred_np = pred.cpu().numpy()
                if pred_np.min() < 0 or pred_np.max() >= num_classes:
                    raise ValueError(
                        f'CityscapesLeaderboardMetric: prediction of '
                        f'{img_path} holds values outside [0, {num_classes})')
                png = osp.abspath(osp.join(self.output_dir, city, name))
                atomic_write_png(png, label_ids[pred_np])
                entry['png'] = png
                entry['arcname'] = f'{city}/{name}'
            self.results.append(entry)

    def _default_results_file(self) -> Optional[str]:
        if self.results_file:
            return self.results_file
        log_file = getattr(MMLogger.get_current_instance(), 'log_file', None)
        if log_file:
            return osp.join(osp.dirname(log_file), 'cityscapes_metrics.json')
        return None

    def _write_results(self, json_file: str, num_images: int,
                       format_only: bool, **fields) -> None:
        """Write the results JSON (``kind`` :data:`TEST_KIND`, ``meta``,
        ``num_images``, then ``fields``) atomically."""
        atomic_write_json(
            json_file, {
                'kind': TEST_KIND,
                'format_only': format_only,
                'meta': self.meta,
                'num_images': num_images,
                **fields
            })

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """Compute, print and save the metrics (or zip the exported PNGs).

        Args:
            results (list[dict]): What :meth:`process` collected.

        Returns:
            dict[str, float]: ``aAcc``, ``mIoU``, ``mAcc``, ``mIoU_category``
            and ``IoU.{category}`` for the 7 categories, in percent; empty with
            ``format_only``.
        """
        logger: MMLogger = MMLogger.get_current_instance()
        json_file = self._default_results_file()
        if self.format_only:
            members = [(r['arcname'], r['png']) for r in results]
            if self.submission_zip:
                atomic_write_zip(self.submission_zip, members)
                print_log(
                    f'{len(members)} labelIds PNGs under {self.output_dir}, '
                    f'zipped into {self.submission_zip}', logger)
            if json_file:
                self._write_results(
                    json_file, len(members), format_only=True,
                    output_dir=osp.abspath(self.output_dir),
                    submission_zip=self.submission_zip and osp.abspath(
                        self.submission_zip))
            return OrderedDict()

        if not results:
            raise ValueError('CityscapesLeaderboardMetric: no image evaluated')
        _, categories = self._label_tables()
        class_names = list(self.dataset_meta['classes'])
        conf = np.sum([r['confusion'] for r in results], axis=0)
        summary, class_rows, cat_rows = self.metrics_from_confusion(
            conf, categories)

        table = PrettyTable()
        table.add_column('Class', class_names)
        table.add_column('IoU', [_fmt(r['IoU']) for r in class_rows])
        table.add_column('Acc', [_fmt(r['Acc']) for r in class_rows])
        print_log('per class results:', logger)
        print_log('\n' + table.get_string(), logger=logger)
        table = PrettyTable()
        table.add_column('Category', list(categories))
        table.add_column('IoU', [_fmt(v) for v in cat_rows])
        print_log('per category results (Cityscapes category level):', logger)
        print_log('\n' + table.get_string(), logger=logger)
        table = PrettyTable()
        for key, val in summary.items():
            table.add_column(key, [_fmt(val)])
        print_log('summary:', logger)
        print_log('\n' + table.get_string(), logger=logger)

        if json_file and is_main_process():
            self._write_results(
                json_file, len(results), format_only=False, **summary,
                classes={
                    name: dict(IoU=r['IoU'], Acc=r['Acc'])
                    for name, r in zip(class_names, class_rows)
                },
                categories=dict(zip(categories, cat_rows)),
                confusion_matrix=conf.tolist())
            print_log(f'metrics written to {json_file}', logger)
        elif not json_file:
            print_log(
                'CityscapesLeaderboardMetric: no results_file and no log '
                'file, the JSON results are not written', logger, level=30)

        metrics = OrderedDict(
            (k, float('nan') if v is None else v) for k, v in summary.items())
        for name, value in zip(categories, cat_rows):
            metrics[f'IoU.{name}'] = float('nan') if value is None else value
        return metrics

    def metrics_from_confusion(self, conf: np.ndarray,
                               categories: 'OrderedDict'):
        """All scores from a summed confusion matrix.

        Args:
            conf (np.ndarray): (N, N) confusion matrix, ground truth in rows.
            categories (OrderedDict[str, list[int]]): Category -> trainIds.

        Returns:
            tuple: ``summary`` (dict: aAcc, mIoU, mAcc, mIoU_category),
            ``class_rows`` (list of dict(IoU, Acc)) and ``cat_rows`` (list of
            category IoUs), all in percent, None where undefined.
        """
        conf_t = torch.from_numpy(conf.astype(np.float64))
        intersect = torch.diag(conf_t)
        area_label = conf_t.sum(1)
        area_pred = conf_t.sum(0)
        union = area_pred + area_label - intersect
        with np.errstate(divide='ignore', invalid='ignore'):
            ret = self.total_area_to_metrics(intersect, union, area_pred,
                                             area_label, ['mIoU'])
            cat = np.array([category_iou(conf, ids)
                            for ids in categories.values()])
            summary = OrderedDict(
                aAcc=_pct(ret['aAcc']),
                mIoU=_pct(_nanmean(ret['IoU'])),
                mAcc=_pct(_nanmean(ret['Acc'])),
                mIoU_category=_pct(_nanmean(cat)))
        class_rows = [
            dict(IoU=_pct(i), Acc=_pct(a))
            for i, a in zip(ret['IoU'], ret['Acc'])
        ]
        return summary, class_rows, [_pct(c) for c in cat]


def _as_2d(data: torch.Tensor) -> Optional[torch.Tensor]:
    """(1, H, W) or (H, W) -> (H, W); None for any other shape."""
    if data.ndim == 3 and data.shape[0] == 1:
        return data[0]
    return data if data.ndim == 2 else None


def _nanmean(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    if np.all(np.isnan(values)):
        return float('nan')
    return float(np.nanmean(values))


def _fmt(value) -> str:
    return 'nan' if value is None else f'{value:.2f}'
