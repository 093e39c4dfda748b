# LMA-ERFNet on the synthetic demo data (tools/make_demo_data.py --out
# data/demo): the demo-sized ERFNet of configs/demo/erfnet_demo.py with the
# Local Memory Attention neck between encoder and decoder (key 16, value 64,
# T=3 memory frames, GatedFusion). As in the paper it starts from the
# trained single-frame model. The recipe is the suite's reference
# (configs/demo/lma-erfnet_demo-light.py) with the changes that gave the
# best worst-case gain over the single-frame twin across the degradation
# modes of the temporal benchmark suite (tools/analysis/temporal_suite.py;
# README, "Temporal benchmark suite"), not changes tuned to the demo's own
# glare/fog data:
#   python tools/train.py configs/demo/erfnet_demo.py
#   python tools/train.py configs/demo/lma-erfnet_demo.py
# (another single-frame checkpoint: --cfg-options load_from=PATH).
_base_ = ['./lma-erfnet_demo-light.py']

# The suite's variant paper-residual-w3-enc-prior. Window 3 beats window 7
# on every mode of the suite: a local read-out, with the position prior
# learning where in the window to look.
window = 3
model = dict(
    neck=dict(
        window=window,
        # identity at init: feat + alpha * fusion(...), alpha = 0, so the
        # fine-tuning starts from the single-frame model's output
        residual=True,
        # a learned (T, window * window) logit prior before the softmax
        position_bias=True,
        # the paper's fusion capacity: one gate per channel, biased 3x3
        # projections (the light reference: one gate per pixel, 1x1)
        fusion=dict(gate_channels=128, proj_kernel_size=3, proj_bias=True)),
    # The encoder trains too, as the single-frame twin's does: with it
    # frozen LMA loses to the twin wherever the current frame is still
    # informative but looks different (blur, under-exposure). The memory
    # frames are encoded as at inference (eval-mode BN, no gradient), so
    # the BN statistics follow the key frames only; encoded in train mode,
    # clean memory frames and degraded key frames share the statistics and
    # the model collapses on under-exposed frames.
    freeze=None,
    memory_encoder_mode='eval')
# at the neck's learning rate the prior barely moves in 300 iterations
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'neck.position_bias': dict(lr_mult=100)}))
