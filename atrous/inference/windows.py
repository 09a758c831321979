"""Test-time geometry: sliding windows, multi-scale inputs and horizontal flips.

Every function here takes a ``forward`` callable, (B, 3, h, w) normalised images →
(B, K, h, w) scores, and works on (N, 3, H, W) batches. Scores of one scale are
assembled from windows by averaging the *logits* of overlapping windows (the windows
see the same image at the same scale); scales and flips are combined by averaging
*softmax probabilities* at the input size (DeepLab v2 §3.3, v3 §4.1 eval strategy).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from atrous.errors import ConfigError
from atrous.nn import resize, scaled_size

__all__ = ["multi_scale_probabilities", "scores_to_probabilities", "sliding_window", "window_starts"]

Forward = Callable[[torch.Tensor], torch.Tensor]


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of ``window`` pixels every ``stride`` covering ``length``.

    The last window is aligned with the end, so every pixel is covered:
    ``window_starts(10, 4, 3) == [0, 3, 6]``; ``window_starts(3, 4, 3) == [0]``.
    """
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    starts.append(length - window)
    return starts


def _run_batched(forward: Forward, batch: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([forward(chunk) for chunk in batch.split(max(1, batch_size))])


def sliding_window(
    forward: Forward,
    images: torch.Tensor,
    crop_size: tuple[int, int],
    *,
    overlap: float = 1 / 3,
    batch_size: int = 1,
) -> torch.Tensor:
    """Scores of (N, 3, H, W) ``images`` assembled from ``crop_size`` windows → (N, K, H, W).

    Windows overlap by ``overlap`` of the crop; images smaller than the crop are padded
    with zeros (the mean colour after normalisation) and the padding cropped away.
    Overlapping windows' logits are averaged. Windows run ``batch_size`` at a time.
    """
    if not 0 <= overlap < 1:
        raise ConfigError(f"sliding-window overlap must be in [0, 1); got {overlap}")
    n, _, height, width = images.shape
    crop_h, crop_w = crop_size
    pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
    padded = F.pad(images, (0, pad_w, 0, pad_h)) if pad_h or pad_w else images
    full_h, full_w = padded.shape[-2:]
    stride_h = max(1, math.ceil(crop_h * (1 - overlap)))
    stride_w = max(1, math.ceil(crop_w * (1 - overlap)))
    boxes = [
        (top, left)
        for top in window_starts(full_h, crop_h, stride_h)
        for left in window_starts(full_w, crop_w, stride_w)
    ]
    windows = torch.cat([padded[:, :, t : t + crop_h, left : left + crop_w] for t, left in boxes])
    scores = _run_batched(forward, windows, batch_size)  # (len(boxes)·N, K, crop_h, crop_w)
    total = scores.new_zeros(n, scores.shape[1], full_h, full_w)
    count = scores.new_zeros(1, 1, full_h, full_w)
    for index, (top, left) in enumerate(boxes):
        total[:, :, top : top + crop_h, left : left + crop_w] += scores[index * n : (index + 1) * n]
        count[:, :, top : top + crop_h, left : left + crop_w] += 1
    return (total / count)[:, :, :height, :width]


def scores_to_probabilities(scores: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Softmax over classes of (N, K, H, W) logits; (N, H, W) integer labels (a model
    exported with argmax) become one-hot (N, K, H, W) with ``num_classes`` K.
    """
    if scores.is_floating_point():
        return scores.float().softmax(dim=1)
    if num_classes is None:
        raise ConfigError("a model that outputs labels needs num_classes to give probabilities")
    return F.one_hot(scores.long(), num_classes).permute(0, 3, 1, 2).float()


def multi_scale_probabilities(
    forward: Forward,
    images: torch.Tensor,
    *,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    num_classes: int | None = None,
) -> torch.Tensor:
    """Class probabilities (N, K, H, W) of (N, 3, H, W) ``images``, averaged over scales × flips.

    Each scale resizes the images by ``s`` (bilinear), runs ``forward`` (and on the
    horizontally flipped images when ``flip``, flipping the scores back), resizes the
    probabilities to H×W and averages them with equal weight.
    """
    height, width = images.shape[-2:]
    total: torch.Tensor | None = None
    count = 0
    for scale in scales:
        scaled = resize(images, scaled_size(height, width, scale))
        batch = torch.cat([scaled, scaled.flip(-1)]) if flip else scaled
        scores = forward(batch)
        if flip:
            plain, mirrored = scores.chunk(2)
            views = [plain, mirrored.flip(-1)]
        else:
            views = [scores]
        for view in views:
            probabilities = resize(scores_to_probabilities(view, num_classes), (height, width))
            total = probabilities if total is None else total + probabilities
            count += 1
    if total is None:
        raise ConfigError("scales must name at least one scale, e.g. (1.0,)")
    return total / count
