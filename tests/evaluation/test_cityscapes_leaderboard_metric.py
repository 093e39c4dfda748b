"""CityscapesLeaderboardMetric on hand-computable confusion matrices."""
import json
import os
import os.path as osp
import stat
import zipfile

import numpy as np
import pytest
import torch
from mmengine.structures import PixelData
from mmseg.datasets import CityscapesDataset
from mmseg.structures import SegDataSample
from PIL import Image

import lma_mmseg  # noqa: F401
from lma_mmseg.evaluation import (CityscapesLeaderboardMetric, category_iou,
                                  cityscapes_label_tables, confusion_matrix)
from lma_mmseg.fileio import is_temp_file

CLASSES = CityscapesDataset.METAINFO['classes']


def make_sample(pred,
                gt=None,
                img_path='x/berlin_000001_000019_leftImg8bit.png'):
    """A model output as the Runner hands it to the metric (to_dict)."""
    sample = SegDataSample(metainfo=dict(img_path=img_path))
    sample.pred_sem_seg = PixelData(data=torch.as_tensor(pred)[None])
    if gt is not None:
        sample.gt_sem_seg = PixelData(data=torch.as_tensor(gt)[None])
    return sample.to_dict()


def build_metric(**kwargs):
    metric = CityscapesLeaderboardMetric(**kwargs)
    metric.dataset_meta = dict(classes=CLASSES)
    return metric


# Image 1: road/sidewalk and person/rider; the 255 pixel (predicted as
# pole) is ignored. Image 2: car/truck/building.
GT1 = [[0, 0, 1], [11, 12, 255]]
PR1 = [[0, 1, 1], [12, 12, 5]]
GT2 = [[13, 13], [13, 2]]
PR2 = [[13, 14], [2, 2]]


def test_label_tables_come_from_cityscapesscripts():
    label_ids, categories = cityscapes_label_tables(CLASSES)
    assert label_ids.tolist() == [
        7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32,
        33
    ]
    assert list(categories) == [
        'flat', 'construction', 'object', 'nature', 'sky', 'human', 'vehicle'
    ]
    assert categories['flat'] == [0, 1]
    assert categories['human'] == [11, 12]
    assert categories['vehicle'] == [13, 14, 15, 16, 17, 18]


def test_label_tables_reject_other_classes():
    with pytest.raises(ValueError, match='trainId 1'):
        cityscapes_label_tables(['road', 'sky'] + list(CLASSES[2:]))
    with pytest.raises(ValueError, match='19 Cityscapes classes'):
        cityscapes_label_tables(CLASSES[:5])


def test_confusion_matrix_by_hand():
    conf = confusion_matrix(
        torch.tensor(PR1), torch.tensor(GT1), num_classes=19, ignore_index=255)
    expected = np.zeros((19, 19), np.int64)
    expected[0, 0] = expected[0, 1] = expected[1, 1] = 1
    expected[11, 12] = expected[12, 12] = 1
    np.testing.assert_array_equal(conf, expected)
    # category IoU counts road predicted as sidewalk as a flat hit
    assert category_iou(conf, [0, 1]) == 1.0
    assert category_iou(conf, [0]) == 0.5
    assert np.isnan(category_iou(conf, [5, 6, 7]))


def test_confusion_matrix_errors():
    with pytest.raises(ValueError, match='shape'):
        confusion_matrix(torch.zeros(2, 3), torch.zeros(3, 2), 19, 255)
    with pytest.raises(ValueError, match='ground truth holds values'):
        confusion_matrix(torch.zeros(2, 2), torch.full((2, 2), 19), 19, 255)
    with pytest.raises(ValueError, match='prediction holds values'):
        confusion_matrix(torch.full((2, 2), 30), torch.zeros(2, 2), 19, 255)


def test_metric_tables_by_hand(tmp_path):
    json_file = tmp_path / 'metrics.json'
    metric = build_metric(results_file=str(json_file), meta=dict(config='c'))
    metric.process({}, [make_sample(PR1, GT1)])
    metric.process({}, [make_sample(PR2, GT2)])
    res = metric.evaluate(2)

    # classes present: road 1/2, sidewalk 1/2, building 1/2, person 0,
    # rider 1/2, car 1/3, truck 0 -> mean over 7
    assert res['mIoU'] == pytest.approx(
        round(100 * (0.5 * 4 + 1 / 3) / 7, 2))
    # Acc: road 1/2, sidewalk 1, building 1, person 0, rider 1, car 1/3;
    # truck has no ground truth (NaN, left out)
    assert res['mAcc'] == pytest.approx(round(100 * (3.5 + 1 / 3) / 6, 2))
    assert res['aAcc'] == pytest.approx(round(100 * 5 / 9, 2))
    # categories: flat 3/3, construction 1/2 (car predicted as building),
    # human 2/2, vehicle 2/3 (car->truck is a vehicle hit, car->building a
    # miss); object/nature/sky absent (NaN, the pole prediction lies on an
    # ignored pixel)
    assert res['IoU.flat'] == 100.0
    assert res['IoU.construction'] == 50.0
    assert res['IoU.human'] == 100.0
    assert res['IoU.vehicle'] == pytest.approx(66.67)
    assert np.isnan(res['IoU.object'])
    assert np.isnan(res['IoU.sky'])
    assert res['mIoU_category'] == pytest.approx(
        round(100 * (1 + 0.5 + 1 + 2 / 3) / 4, 2))

    data = json.loads(json_file.read_text())
    assert data['kind'] == 'lma_mmseg.test'
    assert data['meta'] == dict(config='c')
    assert data['num_images'] == 2
    assert data['mIoU'] == res['mIoU']
    assert data['classes']['road'] == dict(IoU=50.0, Acc=50.0)
    assert data['classes']['truck'] == dict(IoU=0.0, Acc=None)
    assert data['classes']['sky'] == dict(IoU=None, Acc=None)
    assert data['categories']['vehicle'] == pytest.approx(66.67)
    assert data['categories']['nature'] is None
    assert set(data['categories']) == {
        'flat', 'construction', 'object', 'nature', 'sky', 'human', 'vehicle'
    }
    conf = np.array(data['confusion_matrix'])
    assert conf.sum() == 9 and conf[13, 14] == 1


def test_metric_logs_tables_and_json_next_to_log_file(tmp_path):
    from mmengine.logging import MMLogger
    log_file = tmp_path / 'run' / 'run.log'
    log_file.parent.mkdir()
    MMLogger.get_instance('test_metric_logs_tables', log_file=str(log_file))
    metric = build_metric()
    metric.process({}, [make_sample(PR1, GT1)])
    metric.evaluate(1)
    log = log_file.read_text()
    for word in ('traffic light', 'construction', 'vehicle', 'mIoU_category',
                 'aAcc', '37.50'):
        assert word in log
    data = json.loads(
        (tmp_path / 'run' / 'cityscapes_metrics.json').read_text())
    assert data['mIoU'] == 37.5 and data['aAcc'] == 60.0


def test_metric_argument_errors():
    with pytest.raises(ValueError, match='output_dir'):
        CityscapesLeaderboardMetric(format_only=True)
    with pytest.raises(ValueError, match='nan_to_num'):
        CityscapesLeaderboardMetric(nan_to_num=0)
    metric = build_metric()
    with pytest.raises(KeyError, match='gt_sem_seg'):
        metric.process({}, [make_sample(PR1)])
    with pytest.raises(ValueError, match='berlin_000001_000019'):
        metric.process({}, [make_sample(PR1, [[0, 0, 1], [11, 12, 40]])])


TEST_PATHS = [
    'leftImg8bit_sequence/test/berlin/berlin_000000_000019_leftImg8bit.png',
    'leftImg8bit_sequence/test/berlin/berlin_000001_000019_leftImg8bit.png',
    'leftImg8bit_sequence/test/bad-honnef/bad-honnef_000002_000019_'
    'leftImg8bit.png',
]


def export(metric, preds):
    for path, pred in zip(TEST_PATHS, preds):
        metric.process({}, [make_sample(pred, img_path=path)])
    return metric.evaluate(len(preds))


def test_format_only_names_and_label_ids(tmp_path):
    out = tmp_path / 'pred'
    metric = build_metric(
        output_dir=str(out), format_only=True,
        results_file=str(tmp_path / 'm.json'))
    preds = [np.full((4, 6), t, np.int64) for t in (0, 13, 18)]
    preds[0][1, 2] = 10  # sky
    assert export(metric, preds) == {}

    expected = {
        'berlin/berlin_000000_000019_leftImg8bit.png': 7,
        'berlin/berlin_000001_000019_leftImg8bit.png': 26,
        'bad-honnef/bad-honnef_000002_000019_leftImg8bit.png': 33,
    }
    for name, label_id in expected.items():
        img = np.array(Image.open(out / name))
        assert img.dtype == np.uint8 and img.shape == (4, 6)
        assert set(np.unique(img)) <= {label_id, 23}
    first = out / 'berlin' / 'berlin_000000_000019_leftImg8bit.png'
    assert np.array(Image.open(first))[1, 2] == 23
    zip_path = out / 'cityscapes_submission.zip'
    with zipfile.ZipFile(zip_path) as zf:
        assert sorted(zf.namelist()) == sorted(expected)
        img = np.array(Image.open(
            zf.open('berlin/berlin_000001_000019_leftImg8bit.png')))
        assert (img == 26).all()
    assert not [p for p in out.rglob('*') if is_temp_file(p)]
    info = json.loads((tmp_path / 'm.json').read_text())
    assert info['format_only'] and info['num_images'] == 3


def test_format_only_rejects_non_cityscapes_names(tmp_path):
    metric = build_metric(output_dir=str(tmp_path), format_only=True)
    with pytest.raises(ValueError, match='not a Cityscapes image name'):
        metric.process({}, [make_sample([[0]], img_path='a/frame_0001.png')])


def _leftovers(folder):
    return sorted(p.name for p in folder.rglob('*') if p.is_file())


def test_interrupted_png_export_leaves_no_partial_file(tmp_path, monkeypatch):
    out = tmp_path / 'pred'
    metric = build_metric(output_dir=str(out), format_only=True)
    preds = [np.full((8, 8), t, np.int64) for t in (0, 13, 18)]
    calls = []
    real_fsync = os.fsync

    def crash_on_third_file(fd):
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return real_fsync(fd)  # the folder, after a rename
        calls.append(fd)
        if len(calls) == 3:
            raise KeyboardInterrupt('simulated crash while writing')
        return real_fsync(fd)

    monkeypatch.setattr(os, 'fsync', crash_on_third_file)
    with pytest.raises(KeyboardInterrupt):
        export(metric, preds)
    monkeypatch.setattr(os, 'fsync', real_fsync)
    # the two finished PNGs are intact, the third and the zip do not exist,
    # and no temporary file is left behind
    assert _leftovers(out) == [
        'berlin_000000_000019_leftImg8bit.png',
        'berlin_000001_000019_leftImg8bit.png'
    ]
    assert (np.array(Image.open(out / 'berlin' /
                                'berlin_000001_000019_leftImg8bit.png')) ==
            26).all()


def test_interrupted_zip_keeps_previous_zip(tmp_path, monkeypatch):
    out = tmp_path / 'pred'
    preds = [np.full((8, 8), t, np.int64) for t in (0, 13, 18)]
    export(build_metric(output_dir=str(out), format_only=True), preds)
    zip_path = out / 'cityscapes_submission.zip'
    before = zip_path.read_bytes()

    real_write = zipfile.ZipFile.write
    calls = []

    def crash_on_second_member(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise OSError('simulated disk failure')
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, 'write', crash_on_second_member)
    preds2 = [np.full((8, 8), t, np.int64) for t in (1, 2, 3)]
    with pytest.raises(OSError, match='simulated'):
        export(build_metric(output_dir=str(out), format_only=True), preds2)
    # the previous complete zip is untouched, no partial archive exists
    assert zip_path.read_bytes() == before
    with zipfile.ZipFile(zip_path) as zf:
        assert zf.testzip() is None and len(zf.namelist()) == 3
    assert not [p for p in out.rglob('*') if is_temp_file(p)]
    assert osp.getsize(zip_path) == len(before)
