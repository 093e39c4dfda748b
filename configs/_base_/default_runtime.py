# mmseg's default runtime (mmseg::_base_/default_runtime.py) with the
# plugin import. Every config inherits custom_imports and default_scope from
# here (or, when based on an mmseg:: config, from mmseg's runtime and
# ./custom_imports.py); no other base defines them, as mmengine refuses a key
# that two bases of one config both define.
_base_ = ['./custom_imports.py']
default_scope = 'mmseg'
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(
    type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False

tta_model = dict(type='SegTTAModel')
