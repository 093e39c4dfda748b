"""Argument checks of the local attention ops, shared by every path.

The compiled entry points, the unfused baseline and the pure PyTorch
reference check their arguments with these functions, so a bad argument
gets the same error (a ValueError naming the argument, with the shapes,
dtypes and devices of the tensors involved) whichever path runs.
"""
import math
import numbers
from typing import Optional, Sequence, Tuple

import torch

from .extension import ext_has_cuda, load_ext

__all__ = [
    'PADDINGS', 'CPU_DTYPES', 'CUDA_DTYPES', 'check_window', 'check_qkv',
    'check_attn_v', 'check_scale_padding', 'check_bias',
    'check_attention_args', 'check_kernel_device'
]

#: padding modes of the attention
PADDINGS = ('zeros', 'mask')
#: dtypes of the compiled CPU kernels
CPU_DTYPES = (torch.float32, torch.float64)
#: dtypes of the compiled CUDA kernels
CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _describe(**tensors: torch.Tensor) -> str:
    """``name (shape) dtype on device`` of every tensor, for messages."""
    return ', '.join(f'{name} {tuple(t.shape)} {t.dtype} on {t.device}'
                     for name, t in tensors.items())


def check_window(window: int, dilation: int) -> Tuple[int, int]:
    """Check the window side (odd int >= 1) and dilation (int >= 1).

    Returns:
        tuple[int, int]: ``(window, dilation)`` as Python ints.
    """
    if isinstance(window, bool) or not isinstance(window, numbers.Integral):
        raise ValueError(
            f'window must be an odd int >= 1, got {window!r} '
            f'({type(window).__name__})')
    if window < 1 or window % 2 == 0:
        raise ValueError(f'window must be an odd int >= 1, got {window}')
    if (isinstance(dilation, bool)
            or not isinstance(dilation, numbers.Integral)):
        raise ValueError(f'dilation must be an int >= 1, got {dilation!r} '
                         f'({type(dilation).__name__})')
    if dilation < 1:
        raise ValueError(f'dilation must be an int >= 1, got {dilation}')
    return int(window), int(dilation)


def _check_tensors(names_dims: Sequence[Tuple[str, int]],
                   **tensors: torch.Tensor) -> None:
    """Check types, ranks, positive sizes, one device and one dtype.

    Args:
        names_dims (Sequence[tuple[str, int]]): ``(name, rank)`` of every
            tensor in ``tensors``; the first one is the one the others are
            compared with.
        **tensors (Tensor): The tensors by name.
    """
    for name, dim in names_dims:
        t = tensors[name]
        if not isinstance(t, torch.Tensor):
            raise ValueError(
                f'{name} must be a torch.Tensor, got {type(t).__name__}')
        if t.dim() != dim:
            raise ValueError(
                f'{name} must be a {dim}-D tensor, got shape '
                f'{tuple(t.shape)} ({_describe(**tensors)})')
        if not t.is_floating_point():
            raise ValueError(f'{name} must be a floating point tensor, got '
                             f'{t.dtype} ({_describe(**tensors)})')
        if t.numel() == 0:
            raise ValueError(f'every size of {name} must be positive, got '
                             f'shape {tuple(t.shape)} '
                             f'({_describe(**tensors)})')
    first = names_dims[0][0]
    for name, _ in names_dims[1:]:
        if tensors[name].device != tensors[first].device:
            raise ValueError(
                f'{first} and {name} must be on the same device: '
                f'{_describe(**tensors)}')
        if tensors[name].dtype != tensors[first].dtype:
            raise ValueError(f'{first} and {name} must have the same dtype: '
                             f'{_describe(**tensors)}')


def check_qkv(q: torch.Tensor,
              k: torch.Tensor,
              v: Optional[torch.Tensor] = None) -> None:
    """Check q (B, C, H, W), k (B, T, C, H, W) and v (B, T, Cv, H, W)."""
    tensors = dict(q=q, k=k) if v is None else dict(q=q, k=k, v=v)
    dims = [('q', 4), ('k', 5)] + ([] if v is None else [('v', 5)])
    if isinstance(k, torch.Tensor) and k.dim() == 5 and k.shape[1] == 0:
        raise ValueError('the number of memory frames T (dim 1 of k) must '
                         f'be >= 1, got {_describe(**tensors)}')
    _check_tensors(dims, **tensors)
    B, C, H, W = q.shape
    if (k.shape[0] != B or k.shape[2] != C or tuple(k.shape[3:]) != (H, W)):
        raise ValueError(
            'k must have shape (B, T, C, H, W) = (%d, T, %d, %d, %d) to '
            'match q (B, C, H, W), got q %s and k %s' %
            (B, C, H, W, tuple(q.shape), tuple(k.shape)))
    if v is not None and (tuple(v.shape[:2]) != tuple(k.shape[:2])
                          or tuple(v.shape[3:]) != (H, W)):
        raise ValueError(
            'v must have shape (B, T, Cv, H, W) = (%d, %d, Cv, %d, %d) to '
            'match q %s and k %s, got v %s' %
            (B, k.shape[1], H, W, tuple(q.shape), tuple(k.shape),
             tuple(v.shape)))


def check_attn_v(attn: torch.Tensor, v: torch.Tensor, window: int) -> None:
    """Check attn (B, T, window**2, H, W) against v (B, T, Cv, H, W)."""
    if (isinstance(attn, torch.Tensor) and attn.dim() == 5
            and attn.shape[1] == 0):
        raise ValueError('the number of memory frames T (dim 1 of attn) '
                         f'must be >= 1, got attn {tuple(attn.shape)}')
    _check_tensors([('attn', 5), ('v', 5)], attn=attn, v=v)
    B, T, S, H, W = attn.shape
    if S != window * window:
        raise ValueError(
            f'attn must have window * window = {window * window} slots in '
            f'dim 2 for window={window}, got attn {tuple(attn.shape)}')
    if (v.shape[0] != B or v.shape[1] != T or tuple(v.shape[3:]) != (H, W)):
        raise ValueError(
            'v must have shape (B, T, Cv, H, W) = (%d, %d, Cv, %d, %d) to '
            'match attn (B, T, S, H, W) %s, got v %s' %
            (B, T, H, W, tuple(attn.shape), tuple(v.shape)))


def check_scale_padding(scale: float, padding: str) -> Tuple[float, bool]:
    """Check the logit scale (finite real) and the padding mode.

    Returns:
        tuple[float, bool]: ``(scale, mask_padding)``, the scale as a float
        and whether ``padding == 'mask'``.
    """
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise ValueError(
            f'scale must be a real number, got {scale!r} '
            f'({type(scale).__name__})')
    if not math.isfinite(float(scale)):
        raise ValueError(f'scale must be finite, got {scale}')
    if padding not in PADDINGS:
        raise ValueError(
            f'padding must be one of {PADDINGS}, got {padding!r}')
    return float(scale), padding == 'mask'


def check_bias(bias: Optional[torch.Tensor], q: torch.Tensor,
               k: torch.Tensor, window: int) -> None:
    """Check the position bias (T, window * window) against q and k."""
    if bias is None:
        return
    if not isinstance(bias, torch.Tensor):
        raise ValueError(
            f'bias must be a torch.Tensor or None, got {type(bias).__name__}')
    T, S = k.shape[1], window * window
    if tuple(bias.shape) != (T, S):
        raise ValueError(
            f'bias must have shape (T, window * window) = ({T}, {S}) for k '
            f'{tuple(k.shape)} and window={window}, got bias '
            f'{tuple(bias.shape)}')
    if bias.device != q.device:
        raise ValueError(f'q and bias must be on the same device: '
                         f'{_describe(q=q, bias=bias)}')
    if bias.dtype != q.dtype:
        raise ValueError(f'q and bias must have the same dtype: '
                         f'{_describe(q=q, bias=bias)}')


def check_attention_args(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                         window: int, dilation: int, scale: float,
                         padding: str, bias: Optional[torch.Tensor]
                         ) -> Tuple[int, int, float, bool]:
    """Check the arguments of the local attention (fused, unfused and
    reference alike).

    Returns:
        tuple[int, int, float, bool]: ``(window, dilation, scale,
        mask_padding)``.
    """
    window, dilation = check_window(window, dilation)
    check_qkv(q, k, v)
    scale, mask_padding = check_scale_padding(scale, padding)
    check_bias(bias, q, k, window)
    return window, dilation, scale, mask_padding


def check_kernel_device(t: torch.Tensor) -> None:
    """Check that the compiled kernels can run on the device and dtype of
    ``t`` (and that they are built at all)."""
    load_ext()
    if t.device.type == 'cuda':
        if not ext_has_cuda():
            raise RuntimeError(
                'lma_mmseg._ext was built without CUDA kernels, but the '
                f'inputs are on {t.device}. Rebuild it with CUDA: '
                '`FORCE_CUDA=1 python setup.py build_ext --inplace` (or '
                '`FORCE_CUDA=1 pip install -e .`) on a machine with the '
                'CUDA toolkit (CUDA_HOME set).')
        if t.dtype not in CUDA_DTYPES:
            raise ValueError(f'local attention on CUDA supports '
                             f'{CUDA_DTYPES}, got {t.dtype}')
    elif t.device.type == 'cpu':
        if t.dtype not in CPU_DTYPES:
            raise ValueError(f'local attention on CPU supports '
                             f'{CPU_DTYPES}, got {t.dtype}')
    else:
        raise ValueError('local attention has kernels for CPU and CUDA '
                         f'tensors only, got a tensor on {t.device}')
