"""Class-weighted softmax cross-entropy that accepts ignored pixels."""
from typing import Optional

import torch
import torch.nn.functional as F
from mmseg.models.losses import CrossEntropyLoss
from mmseg.models.losses.utils import weight_reduce_loss
from mmseg.registry import MODELS
from torch import Tensor


def weighted_cross_entropy(pred: Tensor,
                           label: Tensor,
                           weight: Optional[Tensor] = None,
                           class_weight: Optional[Tensor] = None,
                           reduction: str = 'mean',
                           avg_factor: Optional[float] = None,
                           ignore_index: int = -100,
                           avg_non_ignore: bool = True) -> Tensor:
    """Softmax cross-entropy with per-class weights.

    With ``reduction='mean'`` the loss is PyTorch's class-weighted mean::

        sum_p w[y_p] * ce_p / sum_p w[y_p]     over the non-ignored pixels p

    (``F.cross_entropy(..., weight=w, ignore_index=i)``, i.e. ``NLLLoss``
    with weights). mmseg 1.2's ``cross_entropy`` computes the same
    denominator by indexing the class weights with every label, ignored
    ones included, and fails on any ignored pixel.

    Args:
        pred (Tensor): Logits (N, C, H, W).
        label (Tensor): Labels (N, H, W), ``ignore_index`` where ignored.
        weight (Tensor, optional): Per-pixel loss weights (N, H, W).
        class_weight (Tensor, optional): Weights of the C classes.
        reduction (str): 'none', 'mean' or 'sum'.
        avg_factor (float, optional): Denominator of the mean; computed as
            above when None.
        ignore_index (int): Label value without loss.
        avg_non_ignore (bool): Average over non-ignored pixels only
            (without class weights, as mmseg's ``cross_entropy``).

    Returns:
        Tensor: The loss (a scalar unless ``reduction='none'``).
    """
    loss = F.cross_entropy(
        pred,
        label,
        weight=class_weight,
        reduction='none',
        ignore_index=ignore_index)
    if avg_factor is None and reduction == 'mean':
        valid = label != ignore_index
        if class_weight is None:
            avg_factor = (valid.sum().item()
                          if avg_non_ignore else label.numel())
        else:
            safe = torch.where(valid, label, torch.zeros_like(label))
            avg_factor = (class_weight[safe] * valid).sum()
    if weight is not None:
        weight = weight.float()
    return weight_reduce_loss(
        loss, weight=weight, reduction=reduction, avg_factor=avg_factor)


@MODELS.register_module()
class WeightedCrossEntropyLoss(CrossEntropyLoss):
    """mmseg's softmax :class:`CrossEntropyLoss` whose class weights work
    with ignored pixels.

    The same arguments and loss name (``loss_ce``) as mmseg's loss; with
    ``class_weight`` the mean is PyTorch's class-weighted mean over the
    non-ignored pixels (see :func:`weighted_cross_entropy`), e.g. the
    ERFNet Cityscapes weights of the Local Memory Attention paper recipe.
    Only the softmax form is provided.

    Args:
        class_weight (list[float] | str, optional): Weight of each class, or
            a file with them. Defaults to None.
        reduction (str): 'none', 'mean' or 'sum'. Defaults to 'mean'.
        loss_weight (float): Weight of the loss. Defaults to 1.0.
        loss_name (str): Name of the loss item. Defaults to 'loss_ce'.
        avg_non_ignore (bool): Average over non-ignored pixels only; must be
            True with ``class_weight``. Defaults to True.
    """

    def __init__(self,
                 class_weight=None,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 loss_name: str = 'loss_ce',
                 avg_non_ignore: bool = True):
        # softmax form (mmseg's defaults use_sigmoid=False, use_mask=False)
        super().__init__(
            reduction=reduction,
            class_weight=class_weight,
            loss_weight=loss_weight,
            loss_name=loss_name,
            avg_non_ignore=avg_non_ignore)
        if self.class_weight is not None:
            if not avg_non_ignore:
                raise ValueError(
                    f'{type(self).__name__}: a class-weighted mean is taken '
                    'over the non-ignored pixels; set avg_non_ignore=True '
                    '(got False)')
            for w in self.class_weight:
                if not float(w) >= 0:
                    raise ValueError(
                        f'{type(self).__name__}: class weights must be >= '
                        f'0, got {list(self.class_weight)}')
        self.cls_criterion = weighted_cross_entropy
