"""Class weights for the cross-entropy loss: median-frequency balancing, ENet's, or given.

Median-frequency balancing (Eigen & Fergus 2015, used by SegNet on CamVid):
``freq(c) = pixels of class c / total pixels of the images that contain c`` and
``weight(c) = median(freq) / freq(c)``. "Total pixels" counts every pixel of those
images, ignore-labelled ones included; this reproduces the CamVid weights published
with atrous' copy of the data (0.279 … 8.86).

ENet (Paszke et al. 2016): ``weight(c) = 1 / ln(1.02 + p(c))`` with ``p(c)`` the share
of all labelled pixels that are class c; bounded by 1/ln(1.02) ≈ 50 for rare classes
and ≈ 1.4 for a class that covers everything, so it balances less than median frequency.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Protocol

import numpy as np
import torch

from atrous.errors import ConfigError
from atrous.limits import parse_numbers

logger = logging.getLogger(__name__)


class _HasMasks(Protocol):
    def masks(self) -> Iterable[np.ndarray]: ...


def _as_numpy(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    return mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)


MaskSource = _HasMasks | Iterable[np.ndarray | torch.Tensor]


def _pixel_counts(dataset_or_masks: MaskSource, num_classes: int, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """(pixels of each class, total pixels of the images containing it), int64 (num_classes,) each."""
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    masks = dataset_or_masks.masks() if hasattr(dataset_or_masks, "masks") else dataset_or_masks
    class_pixels = np.zeros(num_classes, dtype=np.int64)
    image_pixels = np.zeros(num_classes, dtype=np.int64)
    for mask in masks:
        array = _as_numpy(mask).ravel()
        labelled = array[(array >= 0) & (array < num_classes) & (array != ignore_index)]
        counts = np.bincount(labelled.astype(np.int64), minlength=num_classes)
        class_pixels += counts
        image_pixels += (counts > 0) * array.size
    if not (class_pixels > 0).any():
        raise ConfigError("no labelled pixels found; cannot compute class weights")
    return class_pixels, image_pixels


def _fill_absent(weights: np.ndarray, present: np.ndarray, num_classes: int) -> torch.Tensor:
    """Weights of the present classes into a (num_classes,) float32 tensor; absent classes get 1.0."""
    full = np.ones(num_classes, dtype=np.float64)
    full[present] = weights
    if not present.all():
        logger.warning("classes %s never occur; their weight is set to 1.0", np.flatnonzero(~present).tolist())
    return torch.from_numpy(full.astype(np.float32))


def median_frequency_weights(dataset_or_masks: MaskSource, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """Median-frequency class weights, float32 of shape (num_classes,).

    ``dataset_or_masks`` is an atrous dataset (only its masks are read) or an iterable
    of (H, W) integer masks. Classes that never occur get weight 1.0 (they contribute
    no pixels to the loss anyway) and a warning is logged.
    """
    class_pixels, image_pixels = _pixel_counts(dataset_or_masks, num_classes, ignore_index)
    present = class_pixels > 0
    freq = class_pixels[present] / image_pixels[present]
    return _fill_absent(np.median(freq) / freq, present, num_classes)


def enet_weights(
    dataset_or_masks: MaskSource, num_classes: int, ignore_index: int = 255, c: float = 1.02
) -> torch.Tensor:
    """ENet's class weights ``1 / ln(c + p(class))``, float32 of shape (num_classes,).

    ``p`` is each class's share of all labelled pixels; inputs as for
    :func:`median_frequency_weights`, absent classes get 1.0.
    """
    class_pixels, _ = _pixel_counts(dataset_or_masks, num_classes, ignore_index)
    present = class_pixels > 0
    share = class_pixels[present] / class_pixels.sum()
    return _fill_absent(1.0 / np.log(c + share), present, num_classes)


def parse_class_weights(text: str, num_classes: int) -> torch.Tensor:
    """Parse explicit weights "0.2,0.3,..." (commas and/or spaces) → float32 (num_classes,).

    Raises ``ConfigError`` unless there are exactly ``num_classes`` finite, non-negative
    numbers, not all zero.
    """
    values = parse_numbers(text, "class weights", "'0.5,1,2'")
    if len(values) != num_classes:
        raise ConfigError(f"class weights {text!r} has {len(values)} values; need one per class ({num_classes})")
    if not all(math.isfinite(v) and v >= 0 for v in values) or not any(values):
        raise ConfigError(f"class weights {text!r} must be finite, >= 0 and not all zero")
    return torch.tensor(values, dtype=torch.float32)
