"""Config text for short training runs of the demo LMA config on small
generated data (64x128 frames): the shared head of the engine tests'
configs."""

_HEAD = """
_base_ = [{base!r}]
custom_imports = dict(
    imports=['lma_mmseg', {hook_module!r}],
    allow_failed_imports=False)
data_root = {data_root!r}
load_from = None
crop_size = (48, 96)
# the demo pipeline on 48x96 crops of the 64x128 frames
train_pipeline = [
    dict(type='LoadClipFromFiles'),
    dict(
        type='ClipTransformBroadcaster',
        transforms=[
            dict(type='RandomCrop', crop_size=crop_size),
            dict(type='RandomFlip', prob=0.5),
        ]),
    dict(type='PackClipSegInputs'),
]
"""


def small_demo_config(base: str, data_root: str, hook_module: str,
                      rest: str) -> str:
    """Config text: ``base`` (a demo config) on ``data_root`` with 48x96
    crops, importing ``hook_module`` too, followed by ``rest``."""
    return _HEAD.format(
        base=base, data_root=data_root, hook_module=hook_module) + rest
