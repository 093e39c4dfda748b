"""WeightedCrossEntropyLoss: PyTorch's class-weighted mean over the
non-ignored pixels (the authors' NLLLoss with ERFNet's weights)."""
import pytest
import torch
import torch.nn.functional as F
from mmseg.registry import MODELS

import lma_mmseg  # noqa: F401

WEIGHTS = [2.8149, 6.9850, 3.7890, 9.9428]


def test_equals_torch_weighted_mean_with_ignored_pixels():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 5, 6, generator=gen, requires_grad=True)
    label = torch.randint(0, 4, (2, 5, 6), generator=gen)
    label[0, :2] = 255
    loss = MODELS.build(
        dict(type='WeightedCrossEntropyLoss', class_weight=WEIGHTS,
             loss_weight=1.0))
    out = loss(logits, label, ignore_index=255)
    ref = F.nll_loss(F.log_softmax(logits, 1), label,
                     weight=torch.tensor(WEIGHTS), ignore_index=255)
    torch.testing.assert_close(out, ref)
    out.backward()
    assert torch.isfinite(logits.grad).all()
    assert loss.loss_name == 'loss_ce'


def test_without_weights_and_all_ignored():
    logits = torch.randn(1, 4, 3, 3)
    label = torch.randint(0, 4, (1, 3, 3))
    loss = MODELS.build(dict(type='WeightedCrossEntropyLoss'))
    torch.testing.assert_close(
        loss(logits, label, ignore_index=255),
        F.cross_entropy(logits, label, ignore_index=255))
    weighted = MODELS.build(
        dict(type='WeightedCrossEntropyLoss', class_weight=WEIGHTS))
    label.fill_(255)
    assert weighted(logits, label, ignore_index=255).item() == 0.0


def test_bad_arguments():
    with pytest.raises(ValueError, match='avg_non_ignore'):
        MODELS.build(
            dict(type='WeightedCrossEntropyLoss', class_weight=WEIGHTS,
                 avg_non_ignore=False))
    with pytest.raises(ValueError, match='class weights'):
        MODELS.build(
            dict(type='WeightedCrossEntropyLoss', class_weight=[1.0, -1.0]))
