"""init_model and the checked checkpoint loading."""
import logging

import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.runner import save_checkpoint
from mmseg.registry import MODELS

from helpers.tiny_models import lma_model_cfg, make_config, single_model_cfg
from helpers.tools import run_tool_in_process
from lma_mmseg.apis import init_model, load_checkpoint_checked


class _Records(logging.Handler):

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def log_records():
    logger = MMLogger.get_current_instance()
    handler = _Records()
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def test_init_model_from_config(lma_config):
    model = init_model(lma_config, device='cpu')
    assert type(model).__name__ == 'VideoEncoderDecoder'
    assert not model.training
    assert model.cfg is not lma_config and 'model' in model.cfg
    assert len(model.dataset_meta['classes']) > 0
    # the query key head starts equal to the memory key head
    assert torch.equal(model.neck.query_key.weight,
                       model.neck.memory_key.weight)
    override = init_model(
        lma_config, cfg_options={'model.neck.window': 3}, device='cpu')
    assert override.neck.window == 3


def test_init_model_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere.py'):
        init_model(str(tmp_path / 'nowhere.py'))
    with pytest.raises(TypeError, match='config'):
        init_model(42)
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        init_model(
            make_config(lma_model_cfg()),
            checkpoint=str(tmp_path / 'missing.pth'))


def test_roundtrip_checkpoint(tmp_path, lma_config):
    model = init_model(lma_config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = str(tmp_path / 'lma.pth')
    meta = dict(
        dataset_meta=dict(
            classes=list('abcde'), palette=[[i, i, i] for i in range(5)]))
    save_checkpoint(dict(state_dict=model.state_dict(), meta=meta), path)
    loaded = init_model(lma_config, checkpoint=path, strict=True)
    for (name, a), b in zip(model.state_dict().items(),
                            loaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert loaded.dataset_meta['classes'] == list('abcde')


def test_single_frame_checkpoint_into_lma(tmp_path, lma_config, log_records):
    single = MODELS.build(single_model_cfg())
    with torch.no_grad():
        for p in single.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = str(tmp_path / 'single.pth')
    save_checkpoint(dict(state_dict=single.state_dict()), path)

    model = init_model(lma_config, checkpoint=path)
    lma_state = model.state_dict()
    for name, value in single.state_dict().items():
        assert torch.equal(lma_state[name], value), name
    # the LMA parts stay at init; the query key head equals the memory one
    assert torch.equal(model.neck.query_key.weight,
                       model.neck.memory_key.weight)
    report = [m for m in log_records if 'single.pth' in m]
    assert report, log_records
    num_neck = len([k for k in lma_state if k.startswith('neck.')
                    and 'num_batches_tracked' not in k])
    assert f'{num_neck} missing in the checkpoint' in report[-1]
    assert 'neck.' in report[-1] and 'unexpected' not in report[-1]

    with pytest.raises(ValueError, match='single.pth'):
        init_model(lma_config, checkpoint=path, strict=True)


def test_checkpoint_of_another_model(tmp_path, lma_config):
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    path = str(tmp_path / 'other.pth')
    save_checkpoint(dict(state_dict=other.state_dict()), path)
    with pytest.raises(ValueError, match=r"no parameter of checkpoint .*"
                       r"other\.pth.*unexpected"):
        init_model(lma_config, checkpoint=path)


def test_shape_mismatch_is_reported(tmp_path, log_records):
    model = MODELS.build(lma_model_cfg())
    state = model.state_dict()
    state['decode_head.conv_seg.weight'] = torch.zeros(7, 16, 1, 1)
    state['decode_head.conv_seg.bias'] = torch.zeros(7)
    path = str(tmp_path / 'classes7.pth')
    torch.save(dict(state_dict=state), path)
    target = MODELS.build(lma_model_cfg())
    before = target.decode_head.conv_seg.weight.clone()
    load_checkpoint_checked(target, path)
    assert torch.equal(target.decode_head.conv_seg.weight, before)
    assert torch.equal(target.backbone.stem[0].weight,
                       state['backbone.stem.0.weight'])
    message = [m for m in log_records if 'classes7.pth' in m][-1]
    assert '2 with another shape' in message
    assert 'decode_head.conv_seg.weight (7, 16, 1, 1) vs model (5, 16, 1, 1)' \
        in message
    with pytest.raises(ValueError, match='classes7.pth'):
        load_checkpoint_checked(target, path, strict=True)


def test_memory_offsets_must_match_the_test_set():
    """The offsets are stated once: the frames the model reads in streaming
    and the test clips' memory frames must be the same, wherever a model
    meets a test config; the message names both."""
    import os.path as osp

    from mmengine import Config

    from lma_mmseg.apis import check_memory_offsets
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    # the demo's consecutive-memory config (the demo recipe reads frames
    # 6, 4 and 2 back, stated once for the model and the clips)
    config = osp.join(root, 'configs/demo/lma-erfnet_demo-light.py')
    check_memory_offsets(Config.fromfile(
        osp.join(root, 'configs/demo/lma-erfnet_demo.py')))
    cfg = Config.fromfile(config)
    check_memory_offsets(cfg)  # memory_length=3: (-3, -2, -1) both
    with pytest.raises(ValueError) as err:
        init_model(config, cfg_options={'model.neck.memory_length': 4})
    message = str(err.value)
    assert 'memory_offsets=(-4, -3, -2, -1)' in message
    assert 'model.neck.memory_length=4' in message
    assert 'test_dataloader.dataset.frame_offsets=(-3, -2, -1)' in message
    # as many frames, other offsets: refused (counting is not enough)
    cfg.model.memory_offsets = (-6, -4, -2)
    with pytest.raises(ValueError) as err:
        check_memory_offsets(cfg)
    message = str(err.value)
    assert 'memory_offsets=(-6, -4, -2) in streaming (from ' \
        'model.memory_offsets)' in message
    assert 'test_dataloader.dataset.frame_offsets=(-3, -2, -1)' in message
    cfg.test_dataloader.dataset.frame_offsets = (-6, -4, -2)
    check_memory_offsets(cfg)
    # validation may read other frames (model selection)
    cfg.val_dataloader.dataset.frame_offsets = (-2, -1)
    check_memory_offsets(cfg)
    # without memory_offsets, the neck's default length (3) counts
    cfg.model.pop('memory_offsets')
    cfg.model.neck.pop('memory_length')
    with pytest.raises(ValueError, match=r'memory_offsets=\(-3, -2, -1\)'):
        check_memory_offsets(cfg)
    # bad offsets name the config's key
    cfg.model.memory_offsets = (-1, -3)
    with pytest.raises(ValueError, match='model.memory_offsets must be '
                       'distinct and oldest first'):
        check_memory_offsets(cfg)
    # a single-frame model has no memory to check
    check_memory_offsets(Config.fromfile(
        osp.join(root, 'configs/demo/erfnet_demo.py')))
    # the VSPW configs state (-9, -6, -3) once, for the model and the clips
    vspw = Config.fromfile(osp.join(
        root, 'configs/lma/lma-segformer_mit-b1_8xb2-160k_vspw-480x480.py'))
    assert tuple(vspw.model.memory_offsets) == (-9, -6, -3)
    check_memory_offsets(vspw)
    vspw.test_dataloader.dataset.frame_offsets = (-3, -2, -1)
    with pytest.raises(ValueError) as err:
        check_memory_offsets(vspw)
    assert 'memory_offsets=(-9, -6, -3)' in str(err.value)
    assert 'frame_offsets=(-3, -2, -1)' in str(err.value)
    # tools/test.py refuses before testing (in this process: the tool's
    # process boundary is checked by tests/tools/test_test_tool.py)
    proc = run_tool_in_process('test.py', config, config, '--cfg-options',
                               'model.memory_offsets=(-9,-6,-3)')
    assert proc.returncode != 0
    assert 'memory_offsets=(-9, -6, -3)' in proc.stderr
    assert 'frame_offsets=(-3, -2, -1)' in proc.stderr
