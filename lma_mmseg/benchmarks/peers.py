"""Peers of the local attention op: the same computation written with
other PyTorch tools, for the op benchmark.

Each peer takes the op's inputs (q (B, C, H, W), k (B, T, C, H, W),
v (B, T, Cv, H, W)) and returns its output (B, Cv, H, W), for both padding
modes of :func:`lma_mmseg.ops.local_attention`:

* :func:`plain_attention`: a loop over the ``window**2`` offsets of padded
  k and v, as one would write it in plain PyTorch (no unfolded copies);
* :class:`DenseMaskAttention`: ``torch.nn.functional.
  scaled_dot_product_attention`` over all ``T * H * W`` keys with a dense
  neighbourhood mask (``H * W`` x ``T * H * W``);
* :class:`FlexLocalAttention`: ``torch.nn.attention.flex_attention`` with a
  block mask of the window (compiled with ``torch.compile`` by default).

The op's pure PyTorch reference (:func:`lma_mmseg.ops.
local_attention_reference`, ``F.unfold`` + ``einsum``) is the fourth peer.

With ``padding='zeros'`` every window position outside the map takes part
in the softmax with logit 0 and value 0. The attention peers over the real
keys represent these positions by ONE extra key and value of zeros whose
logit is ``log(n)``, with ``n`` the number of outside positions of the
query (``-inf`` when there is none): ``n`` terms ``exp(0)`` in the softmax
denominator and nothing in the numerator, as the op computes. With
``padding='mask'`` the outside positions are left out (no extra key).

The masks of a problem are built once, when the peer is made; a call
rearranges the inputs into sequences (``(B, 1, H * W, C)`` queries,
``(B, 1, T * H * W (+ 1), C)`` keys), runs the attention and rearranges
the output back, all of which is timed.
"""
import warnings
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    'plain_attention', 'window_offsets_ok', 'outside_logits',
    'DenseMaskAttention', 'FlexLocalAttention', 'flex_attention_available',
    'dense_mask_bytes'
]


def plain_attention(q: torch.Tensor,
                    k: torch.Tensor,
                    v: torch.Tensor,
                    window: int = 21,
                    dilation: int = 1,
                    scale: float = 1.0,
                    padding: str = 'zeros') -> torch.Tensor:
    """Local attention as one would write it in plain PyTorch: a loop over
    the ``window**2`` offsets of zero-padded k and v.

    It keeps no unfolded copies (unlike the reference), only the
    ``(B, T, window**2, H, W)`` logits; its cost is ``window**2`` launches
    of element-wise products and reductions per call.

    Args:
        q (Tensor): (B, C, H, W).
        k (Tensor): (B, T, C, H, W).
        v (Tensor): (B, T, Cv, H, W).
        window (int): Odd side of the window.
        dilation (int): Dilation of the window.
        scale (float): Factor of the dot products.
        padding (str): ``'zeros'`` or ``'mask'``.

    Returns:
        Tensor: (B, Cv, H, W).
    """
    B, T, C, H, W = k.shape
    pad = (window // 2) * dilation
    kp = F.pad(k, (pad, pad, pad, pad))
    vp = F.pad(v, (pad, pad, pad, pad))
    offsets = [(i * dilation, j * dilation) for i in range(window)
               for j in range(window)]
    logits = torch.stack([(q[:, None] * kp[..., y:y + H, x:x + W]).sum(2)
                          for y, x in offsets], 2) * scale
    if padding == 'mask':
        inside = F.pad(
            torch.ones(H, W, dtype=torch.bool, device=q.device),
            (pad, pad, pad, pad))
        inside = torch.stack(
            [inside[y:y + H, x:x + W] for y, x in offsets])  # (S, H, W)
        logits = logits.masked_fill(~inside, float('-inf'))
    attn = logits.flatten(1, 2).softmax(1).view_as(logits)
    out = None
    for s, (y, x) in enumerate(offsets):
        part = (attn[:, :, s, None] * vp[..., y:y + H, x:x + W]).sum(1)
        out = part if out is None else out + part
    return out


def window_offsets_ok(size: int, window: int, dilation: int,
                      device=None) -> torch.Tensor:
    """(size, size) bool: whether key row ``j`` is a window offset of query
    row ``i`` along one axis (``|j - i| <= window // 2 * dilation`` and a
    multiple of ``dilation``)."""
    idx = torch.arange(size, device=device)
    d = idx[None, :] - idx[:, None]
    return (d.abs() <= (window // 2) * dilation) & (d % dilation == 0)


def outside_logits(H: int, W: int, T: int, window: int, dilation: int,
                   device=None) -> torch.Tensor:
    """(H * W,) float64: ``log`` of the number of window positions outside
    the map of each query pixel, over the ``T`` frames (``-inf`` where all
    are inside): the logit of the extra zero key of ``padding='zeros'``."""
    rows = window_offsets_ok(H, window, dilation, device).sum(1)
    cols = window_offsets_ok(W, window, dilation, device).sum(1)
    inside = (rows[:, None] * cols[None, :]).flatten()
    outside = T * window * window - T * inside
    return outside.double().log()


def _sequences(q, k, v, extra_key: bool):
    """Queries (B, 1, H*W, C), keys (B, 1, T*H*W (+1), C), values
    (B, 1, T*H*W (+1), Cv); the extra key and value are zeros."""
    B, T, C, H, W = k.shape
    Cv = v.shape[2]
    qs = q.flatten(2).transpose(1, 2)[:, None]
    ks = k.permute(0, 1, 3, 4, 2).reshape(B, 1, T * H * W, C)
    vs = v.permute(0, 1, 3, 4, 2).reshape(B, 1, T * H * W, Cv)
    if extra_key:
        ks = torch.cat([ks, ks.new_zeros(B, 1, 1, C)], 2)
        vs = torch.cat([vs, vs.new_zeros(B, 1, 1, Cv)], 2)
    return qs, ks, vs


def _image(out: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """(B, 1, H*W, Cv) -> (B, Cv, H, W)."""
    B, _, _, Cv = out.shape
    return out[:, 0].transpose(1, 2).reshape(B, Cv, H, W)


class _LocalPeer:
    """What the attention peers share: the problem and the shape check.

    Args:
        H (int), W (int): The feature map size.
        T (int): Memory frames.
        window (int): Odd side of the window.
        dilation (int): Dilation of the window.
        scale (float): Factor of the dot products.
        padding (str): ``'zeros'`` or ``'mask'``.
        device: Where the masks live (that of the inputs).
    """

    def __init__(self, H: int, W: int, T: int, window: int,
                 dilation: int = 1, scale: float = 1.0,
                 padding: str = 'zeros', device=None):
        if padding not in ('zeros', 'mask'):
            raise ValueError(f"`padding` must be 'zeros' or 'mask', got "
                             f'{padding!r}')
        self.H, self.W, self.T = int(H), int(W), int(T)
        self.window, self.dilation = int(window), int(dilation)
        self.scale, self.padding = float(scale), padding
        self.extra_key = padding == 'zeros'
        self.device = torch.device(device or 'cpu')

    @property
    def num_keys(self) -> int:
        """int: Keys of the attention, ``T * H * W`` (+ 1 for zeros)."""
        return self.T * self.H * self.W + int(self.extra_key)

    def _check(self, k: torch.Tensor) -> None:
        if tuple(k.shape[1:2] + k.shape[3:]) != (self.T, self.H, self.W):
            raise ValueError(
                f'{type(self).__name__}: k must be (B, {self.T}, C, '
                f'{self.H}, {self.W}), got {tuple(k.shape)}')


class DenseMaskAttention(_LocalPeer):
    """Local attention as ``F.scaled_dot_product_attention`` with a dense
    neighbourhood mask (see the module docstring).

    The mask is ``(H * W, T * H * W)`` booleans for ``padding='mask'`` and
    an additive float mask with one more column (the extra zero key, logit
    ``log(n)``) for ``padding='zeros'``. Arguments: those of
    :class:`_LocalPeer`, and ``dtype``, the dtype of the inputs (of the
    float mask).
    """

    def __init__(self, *args, dtype: torch.dtype = torch.float32, **kwargs):
        super().__init__(*args, **kwargs)
        H, W = self.H, self.W
        rows = window_offsets_ok(H, self.window, self.dilation, self.device)
        cols = window_offsets_ok(W, self.window, self.dilation, self.device)
        inside = (rows[:, None, :, None]
                  & cols[None, :, None, :]).reshape(H * W, H * W)
        inside = inside.repeat(1, self.T)
        if not self.extra_key:
            self.mask = inside
            return
        mask = torch.full((H * W, self.num_keys), float('-inf'),
                          dtype=dtype, device=self.device)
        mask[:, :-1].masked_fill_(inside, 0.0)
        mask[:, -1] = outside_logits(H, W, self.T, self.window,
                                     self.dilation, self.device).to(dtype)
        self.mask = mask

    def __call__(self, q: torch.Tensor, k: torch.Tensor,
                 v: torch.Tensor) -> torch.Tensor:
        self._check(k)
        qs, ks, vs = _sequences(q, k, v, self.extra_key)
        out = F.scaled_dot_product_attention(
            qs, ks, vs, attn_mask=self.mask, scale=self.scale)
        return _image(out, self.H, self.W)


def flex_attention_available() -> Tuple[bool, str]:
    """Whether the installed torch has ``torch.nn.attention.flex_attention``
    (and why not)."""
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError as e:
        return False, (f'torch {torch.__version__} has no '
                       f'torch.nn.attention.flex_attention ({e})')
    return True, ''


class FlexLocalAttention(_LocalPeer):
    """Local attention as ``flex_attention`` with a block mask of the
    window (see the module docstring).

    Arguments: those of :class:`_LocalPeer`, and ``compiled``: run
    ``torch.compile(flex_attention)`` (the fused kernels; the first call
    compiles), else the eager ``flex_attention``, which materialises the
    scores (for tests). The block mask is made here (not timed).
    """

    def __init__(self, *args, compiled: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        ok, why = flex_attention_available()
        if not ok:
            raise RuntimeError(why)
        from torch.nn.attention.flex_attention import (create_block_mask,
                                                       flex_attention)
        H, W = self.H, self.W
        reach, dil = (self.window // 2) * self.dilation, self.dilation
        real = self.T * H * W

        def in_window(b, h, q_idx, kv_idx):
            pos = kv_idx % (H * W)
            dy = pos // W - q_idx // W
            dx = pos % W - q_idx % W
            inside = ((dy.abs() <= reach) & (dx.abs() <= reach)
                      & (dy % dil == 0) & (dx % dil == 0))
            if self.extra_key:
                inside = inside | (kv_idx == real)
            return inside

        self.score_mod: Optional[object] = None
        if self.extra_key:
            log_n = outside_logits(H, W, self.T, self.window, self.dilation,
                                   self.device)

            def outside_logit(score, b, h, q_idx, kv_idx):
                return torch.where(kv_idx == real,
                                   log_n[q_idx].to(score.dtype), score)

            self.score_mod = outside_logit
        self.block_mask = create_block_mask(
            in_window, None, None, H * W, self.num_keys, device=self.device)
        self.compiled = bool(compiled)
        self.attention = (torch.compile(flex_attention)
                          if self.compiled else flex_attention)

    def __call__(self, q: torch.Tensor, k: torch.Tensor,
                 v: torch.Tensor) -> torch.Tensor:
        self._check(k)
        qs, ks, vs = _sequences(q, k, v, self.extra_key)
        with warnings.catch_warnings():
            if not self.compiled:  # eager on purpose: no advice wanted
                warnings.filterwarnings(
                    'ignore', 'flex_attention called without torch.compile')
            out = self.attention(
                qs, ks, vs, score_mod=self.score_mod,
                block_mask=self.block_mask, scale=self.scale)
        return _image(out, self.H, self.W)


def dense_mask_bytes(H: int, W: int, T: int, batch: int, itemsize: int,
                     backward: bool) -> int:
    """Rough peak memory of :class:`DenseMaskAttention`: the mask, the
    scores and their softmax (and their gradients in backward)."""
    cells = (H * W) * (T * H * W + 1)
    copies = 1 + batch * (4 if backward else 2)
    return int(cells * copies * max(itemsize, 4) * 1.1)
