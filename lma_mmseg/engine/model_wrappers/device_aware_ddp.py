"""MMDistributedDataParallel that also wraps CPU models."""
from mmengine.model import MMDistributedDataParallel
# The Runner looks wrappers up in mmengine's root registry directly
# (``MODEL_WRAPPERS.get``, no scope), so the wrapper is registered there.
from mmengine.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class DeviceAwareDistributedDataParallel(MMDistributedDataParallel):
    """:class:`~mmengine.model.MMDistributedDataParallel` for GPU *and* CPU.

    mmengine's Runner passes ``device_ids=[LOCAL_RANK]`` to every
    ``DistributedDataParallel`` wrapper. PyTorch only accepts ``device_ids``
    for models on an accelerator and refuses them for CPU models, which rules
    out distributed training on CPU (gloo backend). This wrapper drops
    ``device_ids`` and ``output_device`` when all parameters and buffers of
    ``module`` are on the CPU, and is ``MMDistributedDataParallel`` otherwise.

    Select it in a config with
    ``model_wrapper_cfg = dict(type='DeviceAwareDistributedDataParallel')``.
    Buffers follow PyTorch's default: rank 0's buffers (e.g. BN running
    statistics) are synchronised to all ranks, so every rank ends with the
    same model (the Runner's default wrapper keeps per-rank buffers).

    Args:
        module (nn.Module): The model to wrap.
        device_ids (list[int], optional): As for ``DistributedDataParallel``;
            ignored for a CPU model.
        output_device (int, optional): Likewise.
        **kwargs: Other arguments of ``MMDistributedDataParallel``.
    """

    def __init__(self, module, device_ids=None, output_device=None, **kwargs):
        devices = {t.device.type for t in module.parameters()}
        devices |= {t.device.type for t in module.buffers()}
        if devices <= {'cpu'}:
            device_ids = None
            output_device = None
        super().__init__(
            module=module,
            device_ids=device_ids,
            output_device=output_device,
            **kwargs)
