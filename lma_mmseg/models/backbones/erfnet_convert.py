"""Convert an mmseg ERFNet checkpoint to the split ERFNet of lma_mmseg.

mmseg's ERFNet model keeps encoder and decoder in one backbone
(``backbone.encoder.*``, ``backbone.decoder.*``) with an FCN head
(``decode_head.*``). lma_mmseg splits it into ``ERFNetEncoder`` (backbone)
and ``ERFNetDecoderHead`` (decode head), so that the memory neck can sit
between the two. Only the decoder keys move::

    backbone.encoder.*  ->  backbone.encoder.*      (unchanged)
    backbone.decoder.*  ->  decode_head.decoder.*
    decode_head.*       ->  decode_head.*           (unchanged)

The converted checkpoint holds ``state_dict`` and ``meta`` (optimizer and
runner states are dropped), so it serves as ``load_from`` of the split ERFNet
and of LMA-ERFNet configs. ``tools/convert/mmseg_erfnet_to_split.py`` is the
command line.
"""
from collections import OrderedDict

import torch

from ...fileio import atomic_writer

SRC_DECODER = 'backbone.decoder.'
DST_DECODER = 'decode_head.decoder.'
KEPT_PREFIXES = ('backbone.encoder.', 'decode_head.')


def convert_state_dict(state_dict, source='state_dict'):
    """Rename the keys of an mmseg ERFNet state dict for the split ERFNet.

    Args:
        state_dict (Mapping[str, Tensor]): Weights of an mmseg
            ``EncoderDecoder`` with an ``ERFNet`` backbone. A ``module.``
            prefix (DataParallel) is removed first.
        source (str): Name of the input, used in error messages.

    Returns:
        OrderedDict[str, Tensor]: The same tensors under the split keys.

    Raises:
        ValueError: When the input is not an mmseg ERFNet state dict (no
            encoder or decoder keys, a key already in the split layout, or
            keys outside the backbone and decode head).
    """
    out = OrderedDict()
    unknown = []
    num_encoder = num_decoder = 0
    for key, value in state_dict.items():
        if key.startswith('module.'):
            key = key[len('module.'):]
        if key.startswith(SRC_DECODER):
            new_key = DST_DECODER + key[len(SRC_DECODER):]
            num_decoder += 1
        elif key.startswith(DST_DECODER):
            raise ValueError(
                f'{source}: key {key!r} is already in the split layout; '
                'this checkpoint does not need converting')
        elif key.startswith(KEPT_PREFIXES):
            new_key = key
            num_encoder += key.startswith('backbone.encoder.')
        else:
            unknown.append(key)
            continue
        out[new_key] = value
    if unknown:
        raise ValueError(
            f'{source}: keys outside backbone.encoder, backbone.decoder and '
            f'decode_head, so not an mmseg ERFNet checkpoint: '
            f'{unknown[:5]}{" ..." if len(unknown) > 5 else ""}')
    if num_encoder == 0 or num_decoder == 0:
        raise ValueError(
            f'{source}: expected backbone.encoder.* and backbone.decoder.* '
            f'keys of an mmseg ERFNet, found {num_encoder} encoder and '
            f'{num_decoder} decoder keys')
    return out


def convert_checkpoint(src, dst):
    """Read an mmseg ERFNet checkpoint and write the split one atomically.

    Args:
        src (str): Path or URL of the mmseg checkpoint (a dict with a
            ``state_dict``, or a bare state dict).
        dst (str): Output path, written atomically
            (:func:`lma_mmseg.fileio.atomic_writer`).

    Returns:
        int: The number of tensors written.
    """
    from mmengine.runner.checkpoint import _load_checkpoint

    from ... import compat  # noqa: F401  (torch>=2.6 loader allow-list)

    ckpt = _load_checkpoint(src, map_location='cpu')
    if not isinstance(ckpt, dict):
        raise ValueError(f'{src}: expected a checkpoint dict, got '
                         f'{type(ckpt).__name__}')
    state_dict = ckpt.get('state_dict', ckpt)
    new_ckpt = dict(state_dict=convert_state_dict(state_dict, source=src))
    meta = dict(ckpt.get('meta') or {})
    meta['converted_from'] = src
    meta['converter'] = f'{__name__}.convert_checkpoint'
    new_ckpt['meta'] = meta

    with atomic_writer(dst) as f:
        torch.save(new_ckpt, f)
    return len(new_ckpt['state_dict'])
