"""Joint image/mask transforms on ``torchvision.transforms.v2``.

The image travels as ``tv_tensors.Image`` and the mask as ``tv_tensors.Mask``, so every
geometric op treats them alike and the mask is always resampled with NEAREST (never
interpolated: no label value appears that was not in the input). Training follows the
DeepLab recipe: random scale, pad to the crop size with the mean pixel (image) and the
ignore index (mask), random crop, horizontal flip; photometric jitter is an addition
applied before padding so padded pixels stay exactly the mean, i.e. 0 after
normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

from atrous.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RandomScale:
    """Resize image (bilinear, antialiased) and mask (nearest) by one factor drawn
    uniformly from ``scale_range``; a callable on ``(Image, Mask)``."""

    def __init__(self, scale_range: tuple[float, float]) -> None:
        low, high = scale_range
        if not 0 < low <= high:
            raise ConfigError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}")
        self.scale_range = (float(low), float(high))

    def __call__(self, image: tv_tensors.Image, mask: tv_tensors.Mask) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        low, high = self.scale_range
        scale = low + (high - low) * float(torch.rand(()))  # torch RNG, like the v2 transforms
        height, width = image.shape[-2:]
        size = [max(1, round(height * scale)), max(1, round(width * scale))]
        image = F.resize(image, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
        mask = F.resize(mask, size, interpolation=InterpolationMode.NEAREST_EXACT)
        return image, mask

    def __repr__(self) -> str:
        return f"RandomScale(scale_range={self.scale_range})"


class JointTransform:
    """Turn plain tensors into tv_tensors on the way in and back on the way out."""

    def __init__(self, pipeline: v2.Compose) -> None:
        self.pipeline = pipeline

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if image.ndim != 3 or image.shape[0] != 3 or mask.shape != image.shape[-2:]:
            raise ConfigError(
                f"transforms expect image (3, H, W) and mask (H, W) of the same size, got "
                f"{tuple(image.shape)} and {tuple(mask.shape)}"
            )
        out_image, out_mask = self.pipeline(tv_tensors.Image(image), tv_tensors.Mask(mask.long()))
        return out_image.as_subclass(torch.Tensor), out_mask.as_subclass(torch.Tensor)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pipeline})"


def _check_stats(mean: Sequence[float], std: Sequence[float]) -> tuple[list[float], list[float]]:
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ConfigError(f"mean and std need 3 values each (0-1 scale), std > 0; got {mean}, {std}")
    if max(mean) > 1.0 or max(std) > 1.0:
        raise ConfigError(f"mean/std are on the 0-1 scale (e.g. {IMAGENET_MEAN}); got {mean}, {std}")
    return [float(m) for m in mean], [float(s) for s in std]


def _crop_size(crop_size: int | Sequence[int]) -> tuple[int, int]:
    size = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"crop_size must be a positive int or (height, width), got {crop_size}")
    return int(size[0]), int(size[1])


def train_transforms(
    crop_size: int | tuple[int, int],
    *,
    scale_range: tuple[float, float] = (0.5, 2.0),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    ignore_index: int = 255,
    hflip: bool = True,
    jitter: bool = True,
) -> JointTransform:
    """Training augmentation: (image uint8 (3, H, W), mask (H, W)) →
    (float32 normalised (3, crop_h, crop_w), int64 (crop_h, crop_w)).

    Random scale in ``scale_range`` → colour jitter (brightness/contrast/saturation 0.25)
    → to float in [0, 1] → pad bottom/right to the crop size with ``mean`` (image) and
    ``ignore_index`` (mask) → random crop → horizontal flip (p = 0.5) → normalise.
    """
    mean, std = _check_stats(mean, std)
    steps: list = [RandomScale(scale_range)]
    if jitter:
        steps.append(v2.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25))
    steps += [
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        _PadToSize(_crop_size(crop_size), mean, ignore_index),
        v2.RandomCrop(_crop_size(crop_size)),
    ]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    steps.append(v2.Normalize(mean, std))
    return JointTransform(v2.Compose(steps))


def eval_transforms(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> JointTransform:
    """Evaluation: (uint8 (3, H, W), mask (H, W)) → (float32 normalised (3, H, W), int64 (H, W))."""
    mean, std = _check_stats(mean, std)
    return JointTransform(
        v2.Compose([v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True), v2.Normalize(mean, std)])
    )


class _PadToSize:
    """Pad bottom/right up to ``size``: image with the per-channel ``fill``, mask with ``ignore``."""

    def __init__(self, size: tuple[int, int], fill: list[float], ignore_index: int) -> None:
        self.size, self.fill, self.ignore_index = size, fill, ignore_index

    def __call__(self, image: tv_tensors.Image, mask: tv_tensors.Mask) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        height, width = image.shape[-2:]
        pad_h, pad_w = max(self.size[0] - height, 0), max(self.size[1] - width, 0)
        if pad_h == 0 and pad_w == 0:
            return image, mask
        padding = [0, 0, pad_w, pad_h]  # left, top, right, bottom
        return (
            F.pad(image, padding, fill=self.fill),
            F.pad(mask, padding, fill=self.ignore_index),
        )

    def __repr__(self) -> str:
        return f"PadToSize(size={self.size}, fill={self.fill}, ignore_index={self.ignore_index})"
