"""Losses: cross-entropy with ignore label and class weights, bootstrapping, aux term."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from atrous.engine.losses import (
    SegmentationLoss,
    bootstrapped_cross_entropy,
    cross_entropy,
)
from atrous.errors import InputError


def _batch(seed: int = 0, n: int = 2, k: int = 4, h: int = 6, w: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, h, w, generator=generator)
    target = torch.randint(0, k, (n, h, w), generator=generator)
    target[0, 0, :3] = 255
    return logits, target


def test_cross_entropy_matches_torch_with_ignore_and_weights() -> None:
    logits, target = _batch()
    weight = torch.tensor([0.5, 1.0, 2.0, 0.25])
    expected = F.cross_entropy(logits, target, weight=weight, ignore_index=255)
    assert torch.allclose(cross_entropy(logits, target, weight=weight), expected, atol=1e-6)
    assert torch.allclose(cross_entropy(logits, target), F.cross_entropy(logits, target, ignore_index=255), atol=1e-6)


def test_cross_entropy_of_fully_ignored_batch_is_zero_not_nan() -> None:
    logits, _ = _batch()
    logits.requires_grad_(True)
    target = torch.full((2, 6, 5), 255)
    loss = cross_entropy(logits, target)
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0)


def test_logits_are_upsampled_to_the_label_size() -> None:
    logits, target = _batch(h=8, w=8)
    small = logits[:, :, ::2, ::2]
    upsampled = F.interpolate(small, size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(cross_entropy(small, target), cross_entropy(upsampled, target), atol=1e-6)


def test_bootstrap_keeps_the_hardest_pixels_of_each_image() -> None:
    logits, target = _batch(seed=3)
    per_pixel = F.cross_entropy(logits, target, ignore_index=255, reduction="none").flatten(1)
    labelled = (target != 255).flatten(1)
    kept = []
    for row, valid in zip(per_pixel, labelled):
        values = row[valid]
        k = math.ceil(0.3 * values.numel())
        kept.append(values.topk(k).values)
    expected = torch.cat(kept).mean()
    assert torch.allclose(bootstrapped_cross_entropy(logits, target, ratio=0.3), expected, atol=1e-6)
    # keeping every pixel is plain cross-entropy; keeping fewer can only raise the loss
    full = bootstrapped_cross_entropy(logits, target, ratio=1.0)
    assert torch.allclose(full, cross_entropy(logits, target), atol=1e-6)
    assert bootstrapped_cross_entropy(logits, target, ratio=0.1) > full


def test_bootstrap_with_class_weights_is_a_weighted_mean_of_kept_pixels() -> None:
    logits, target = _batch(seed=5, n=1)
    weight = torch.tensor([1.0, 3.0, 0.5, 2.0])
    per_pixel = F.cross_entropy(logits, target, weight=weight, ignore_index=255, reduction="none").flatten()
    valid = (target != 255).flatten()
    pixel_weight = weight[target.clamp(max=3)].flatten()
    order = torch.where(valid, per_pixel, torch.tensor(-1.0)).argsort(descending=True)
    k = math.ceil(0.5 * int(valid.sum()))
    chosen = order[:k]
    expected = per_pixel[chosen].sum() / pixel_weight[chosen].sum()
    got = bootstrapped_cross_entropy(logits, target, ratio=0.5, weight=weight)
    assert torch.allclose(got, expected, atol=1e-6)


def test_segmentation_loss_adds_weighted_aux_term() -> None:
    logits, target = _batch()
    aux, _ = _batch(seed=9)
    loss = SegmentationLoss(aux_weight=0.4)
    expected = cross_entropy(logits, target) + 0.4 * cross_entropy(aux, target)
    assert torch.allclose(loss({"out": logits, "aux": aux}, target), expected, atol=1e-6)
    assert torch.allclose(loss(logits, target), cross_entropy(logits, target))


def test_segmentation_loss_rejects_wrong_weight_count_and_shapes() -> None:
    logits, target = _batch()
    with pytest.raises(InputError, match="3 class weights"):
        SegmentationLoss(class_weights=torch.ones(3))(logits, target)
    with pytest.raises(InputError, match="expected logits"):
        cross_entropy(logits[0], target)
    with pytest.raises(InputError, match="ratio"):
        bootstrapped_cross_entropy(logits, target, ratio=0.0)
