# LMA-ERFNet on the synthetic demo data with the former demo recipe, the
# "light" reference of the temporal benchmark suite
# (lma_mmseg/evaluation/temporal_suite.py builds every variant from it):
# GatedFusion with one gate per pixel and bias-free 1x1 projections, the
# paper's form of the fusion (no residual start), window 7, no position
# prior. configs/demo/lma-erfnet_demo.py is the recipe the suite chose.
#   python tools/train.py configs/demo/erfnet_demo.py
#   python tools/train.py configs/demo/lma-erfnet_demo-light.py
_base_ = ['./lma-erfnet_demo.py']

# The chosen recipe without its three changes: window 7, the fusion output
# replaces the map (no residual start), no position prior (so no learning
# rate of its own).
window = 7
model = dict(neck=dict(window=window, residual=False, position_bias=False))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='Adam', lr=1e-3, betas=(0.9, 0.999),
                   weight_decay=1e-4))
