"""The test config of the Cityscapes leaderboard evaluation.

:func:`build_test_cfg` turns a model config and a checkpoint into the config
a Runner tests with (``tools/test.py``): on Cityscapes classes the test
evaluator becomes ``CityscapesLeaderboardMetric`` (keeping the config's
``ignore_index``); other datasets (e.g. VSPW) keep the config's own metrics,
whose results :func:`save_test_results` writes. The memory offsets of a
memory model must be the test set's
(:func:`lma_mmseg.apis.check_memory_offsets`). The test dataset can be
switched to another split (:func:`switch_split`) or read without ground
truth for a format-only export (:func:`unlabelled`), and
``SegVisualizationHook`` can draw overlays.
"""
import os.path as osp
from typing import Optional

from mmengine.config import Config, ConfigDict

from ..apis.inference import check_memory_offsets
from ..benchmarks.model_benchmark import describe_model
from ..fileio import atomic_write_json
from .dataset_info import is_cityscapes_dataset

SPLITS = ('train', 'val', 'test')
METRIC = 'CityscapesLeaderboardMetric'
RESULTS_JSON = 'cityscapes_metrics.json'
OTHER_RESULTS_JSON = 'metrics.json'


def switch_split(dataset_cfg: ConfigDict, split: str) -> None:
    """Point ``dataset_cfg.data_prefix`` at ``split`` in place.

    Every ``data_prefix`` value whose last folder is ``train``, ``val`` or
    ``test`` gets that folder replaced by ``split``.

    Raises:
        ValueError: The dataset has no ``data_prefix`` or none of its entries
            ends with a split folder.
    """
    prefix = dataset_cfg.get('data_prefix')
    if not prefix:
        raise ValueError(
            f'--split {split}: test_dataloader.dataset '
            f'({dataset_cfg.get("type")}) has no data_prefix to rewrite; '
            'set the folders with --cfg-options instead')
    changed = False
    for key, value in prefix.items():
        if not isinstance(value, str):
            continue
        head, last = osp.split(value.rstrip('/'))
        if last in SPLITS:
            prefix[key] = osp.join(head, split) if head else split
            changed = True
    if not changed:
        raise ValueError(
            f'--split {split}: no entry of test_dataloader.dataset.'
            f'data_prefix={dict(prefix)} ends with a split folder '
            f'{SPLITS}; set the folders with --cfg-options instead')


def unlabelled(dataset_cfg: ConfigDict) -> None:
    """Test ``dataset_cfg`` without ground truth, in place (format-only).

    The Cityscapes test split has no labels: ``*LoadAnnotations`` and
    ``LoadCheckedAnnotations`` steps are dropped from the pipeline and
    ``data_prefix.seg_map_path`` is set to ``''``. A video dataset then
    lists its samples from ``key_img_path``, which defaults to
    ``leftImg8bit/{split}`` next to a ``leftImg8bit_sequence/{split}`` image
    folder (the annotated frames).
    """
    pipeline = dataset_cfg.get('pipeline')
    if pipeline:
        dataset_cfg.pipeline = [
            t for t in pipeline
            if not str(t.get('type', '')).endswith(
                ('LoadAnnotations', 'LoadCheckedAnnotations'))
        ]
    prefix = dataset_cfg.get('data_prefix')
    if not prefix:
        return
    if 'seg_map_path' in prefix:
        prefix['seg_map_path'] = ''
    img = str(prefix.get('img_path', '')).rstrip('/')
    head, split = osp.split(img)
    if osp.basename(head) == 'leftImg8bit_sequence' and not prefix.get(
            'key_img_path'):
        prefix['key_img_path'] = osp.join(
            osp.dirname(head), 'leftImg8bit', split)


def build_test_cfg(config: str,
                   checkpoint: str,
                   work_dir: Optional[str] = None,
                   out: Optional[str] = None,
                   format_only: bool = False,
                   split: Optional[str] = None,
                   show_dir: Optional[str] = None,
                   cfg_options: Optional[dict] = None,
                   launcher: str = 'none') -> Config:
    """The config a Runner tests ``checkpoint`` with, evaluated by
    ``CityscapesLeaderboardMetric`` (``tools/test.py``).

    Args:
        config (str): Config file.
        checkpoint (str): Checkpoint path or URL.
        work_dir (str, optional): Work dir (default: the config's, else
            ``work_dirs/<config name>``).
        out (str, optional): Folder of the labelIds PNGs, the submission zip
            (``format_only``) and the results JSON (default: the JSON in the
            work dir; with ``format_only`` ``{work_dir}/
            cityscapes_test_results``).
        format_only (bool): Only export labelIds PNGs and a zip, without
            ground truth (see :func:`unlabelled`); the test split unless
            ``split`` says otherwise.
        split (str, optional): Rewrite the test dataset to this split (see
            :func:`switch_split`).
        show_dir (str, optional): Folder of colorized overlays
            (``SegVisualizationHook``).
        cfg_options (dict, optional): Overrides merged into the config.
        launcher (str): The job launcher.
    """
    if not osp.isfile(config):
        raise FileNotFoundError(f'config file {config!r} not found')
    if not osp.isfile(checkpoint) and '://' not in checkpoint:
        raise FileNotFoundError(
            f'checkpoint file {checkpoint!r} not found')
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)

    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config))[0])
    cfg.load_from = checkpoint

    for key in ('test_dataloader', 'test_cfg'):
        if cfg.get(key) is None:
            raise ValueError(f'config {config!r} has no {key}')
    # clip-mode test scores must describe the model as it streams
    check_memory_offsets(cfg)
    split = split or ('test' if format_only else None)
    if split is not None:
        switch_split(cfg.test_dataloader.dataset, split)
    if format_only:
        unlabelled(cfg.test_dataloader.dataset)

    if format_only and out is None:
        out = osp.join(cfg.work_dir, 'cityscapes_test_results')
    old = cfg.get('test_evaluator') or {}
    if isinstance(old, (list, tuple)):
        old = old[0] if old else {}
    meta = dict(
        config=osp.abspath(config),
        checkpoint=checkpoint,
        split=split or _current_split(cfg.test_dataloader.dataset),
        **describe_model(cfg.model))
    if is_cityscapes_dataset(cfg.test_dataloader.dataset):
        cfg.test_evaluator = dict(
            type=METRIC,
            ignore_index=old.get('ignore_index', 255),
            output_dir=out,
            format_only=format_only,
            results_file=osp.join(out or cfg.work_dir, RESULTS_JSON),
            meta=meta)
    elif format_only:
        raise ValueError(
            '--format-only exports Cityscapes labelIds, but the test dataset '
            f'{cfg.test_dataloader.dataset.get("type")} does not have the '
            'Cityscapes classes')
    else:  # e.g. VSPW: the config's own metrics (mIoU, VC_n)
        cfg.lma_test_results = dict(
            file=osp.join(out or cfg.work_dir, OTHER_RESULTS_JSON), meta=meta)

    if show_dir:
        hooks = cfg.get('default_hooks') or ConfigDict()
        vis = hooks.get('visualization') or ConfigDict(
            type='SegVisualizationHook')
        vis.draw = True
        vis.interval = 1
        hooks.visualization = vis
        cfg.default_hooks = hooks
        visualizer = cfg.get('visualizer') or ConfigDict(
            type='SegLocalVisualizer',
            vis_backends=[dict(type='LocalVisBackend')],
            name='visualizer')
        visualizer.save_dir = show_dir
        # the Runner names it after the experiment (timestamped), so that a
        # visualizer of an earlier run in this process is not reused
        visualizer.pop('name', None)
        cfg.visualizer = visualizer
    return cfg


def _current_split(dataset_cfg) -> str:
    prefix = dataset_cfg.get('data_prefix') or {}
    for value in prefix.values():
        if isinstance(value, str):
            last = osp.basename(value.rstrip('/'))
            if last in SPLITS:
                return last
    return 'unknown'


def save_test_results(cfg: Config, metrics: dict,
                      main_process: bool = True) -> str:
    """The results JSON of a test run: written by the Cityscapes metric
    itself, or here (atomically, by the main process) for the config's own
    metrics on other datasets.

    Returns:
        str: The results JSON path.
    """
    other = cfg.get('lma_test_results')
    if other is None:
        return cfg.test_evaluator['results_file']
    if main_process:
        atomic_write_json(
            other['file'],
            dict(
                kind='lma_mmseg.test',
                format_only=False,
                meta=other['meta'],
                **metrics))
    return other['file']
