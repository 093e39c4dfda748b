"""Fixtures of the hostile-input tests: the command lines loaded as
modules, and folders that cannot be written."""
import os
import tempfile

import pytest
from hostile_inputs import load_tool


@pytest.fixture(scope='session')
def converter():
    return load_tool('dataset_converters/cityscapes_seq.py')


@pytest.fixture
def unwritable_dir(tmp_path):
    """A folder in which no file can be created, for root too: ``/sys``
    (sysfs refuses new files to every user) when running as root, else a
    folder without write permission."""
    if os.geteuid() != 0:
        folder = tmp_path / 'read-only'
        folder.mkdir()
        folder.chmod(0o555)
        yield str(folder)
        folder.chmod(0o755)
        return
    try:
        fd, probe = tempfile.mkstemp(dir='/sys')
    except OSError:
        yield '/sys'
        return
    os.close(fd)
    os.unlink(probe)
    pytest.skip('/sys is writable here: no folder that root cannot write')


@pytest.fixture(autouse=True)
def fresh_logger(request):
    """A current MMLogger per test: its handler writes to this test's
    (captured) stdout, not to a stream a former test closed."""
    from mmengine.logging import MMLogger
    return MMLogger.get_instance(f'robustness-{request.node.nodeid}')


@pytest.fixture(scope='session')
def exported(tmp_path_factory):
    """A tiny LMA model (helpers.tiny_models), exported once with
    ``export_step`` at 32x32: the folder with ``step.pt2`` and
    ``step.json``, and its config and checkpoint."""
    import torch
    from mmengine.config import Config

    from helpers.tiny_models import lma_model_cfg, make_config
    from lma_mmseg.apis import init_model
    from lma_mmseg.apis.export import export_step
    root = tmp_path_factory.mktemp('exported')
    config = make_config(lma_model_cfg())
    torch.manual_seed(0)
    model = init_model(config, device='cpu')
    model.dataset_meta = dict(
        classes=tuple('abcde'), palette=[[i * 40, 0, 0] for i in range(5)])
    export_step(model, (32, 32), str(root / 'export'))
    config_file = root / 'tiny_lma.py'
    Config(dict(config)).dump(str(config_file))
    checkpoint = root / 'tiny_lma.pth'
    torch.save(
        dict(
            state_dict=model.state_dict(),
            meta=dict(dataset_meta=model.dataset_meta)), checkpoint)
    return dict(
        folder=root / 'export', config=config_file, checkpoint=checkpoint)
