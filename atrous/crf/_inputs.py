"""Checks and normalises what ``DenseCRF`` is given; every refusal is an ``InputError``."""

from __future__ import annotations

import torch
from torch import Tensor

from atrous.errors import InputError

SUM_TOLERANCE = 1e-3  # |Σ_c p - 1| allowed per pixel for probabilities


def _shape(t: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def _batched(t: Tensor, name: str, layout: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise InputError(f"{name} must be a torch.Tensor {layout}, got {type(t).__name__}")
    if t.dim() == 3:
        return t.unsqueeze(0)
    if t.dim() == 4:
        return t
    raise InputError(f"{name} must be {layout} or unbatched without N, got shape {_shape(t)}")


def check_image(image: Tensor) -> Tensor:
    """(N, K, H, W) or (K, H, W), uint8 or real values in [0, 255] → float (N, K, H, W).

    A float image whose values all lie in (0, 1] is refused as a 0–1 image (its colours
    would read as nearly black), as is one holding NaN or inf."""
    batched = _batched(image, "image", "(N, 3, H, W)")
    if batched.dtype == torch.uint8:
        return batched.float()
    if batched.dtype == torch.bool or batched.is_complex():
        raise InputError(f"image must be uint8 (or real values in [0, 255]), got {batched.dtype}")
    values = batched.float()
    if not values.numel():
        return values
    finite = torch.isfinite(values)
    if not finite.all():
        raise InputError(
            f"image of dtype {batched.dtype} holds {int((~finite).sum())} NaN or infinite value(s); "
            "pass the uint8 image (0–255)"
        )
    low, high = values.min().item(), values.max().item()
    if low < 0 or high > 255:
        raise InputError(
            f"image of dtype {batched.dtype} has values outside [0, 255] (min {low:g}, max {high:g}); "
            "pass the uint8 image, not a normalised one"
        )
    if 0 < high <= 1:
        # Colour differences of a 0–1 image are 255 times too small for the bilateral kernel's σ.
        raise InputError(
            f"image of dtype {batched.dtype} has values in 0–1 (max {high:g}), but the CRF measures colour "
            "in 0–255; pass (image * 255) or the uint8 image"
        )
    return values


def check_scores(probs: Tensor, from_logits: bool, logits_option: str = "from_logits=True") -> Tensor:
    """Class probabilities (or logits) (N, C, H, W) or (C, H, W) → (N, C, H, W) float."""
    what = "logits" if from_logits else "probs"
    batched = _batched(probs, what, "(N, C, H, W)")
    if not batched.is_floating_point():
        raise InputError(f"{what} must be a floating-point tensor, got {batched.dtype}")
    if batched.shape[1] < 2:
        raise InputError(f"{what} has {batched.shape[1]} class(es) in dim 1 of {_shape(probs)}; a CRF needs >= 2")
    if batched.shape[2] == 0 or batched.shape[3] == 0:
        raise InputError(f"{what} has an empty image size {_shape(probs)}")
    values = batched.detach()
    if from_logits:
        if not torch.isfinite(values).all():
            raise InputError(f"{what} contain NaN or inf ({int((~torch.isfinite(values)).sum())} values)")
        return batched
    total = values.sum(1)  # NaN or inf anywhere makes its pixel's sum non-finite
    if not torch.isfinite(total).all():
        raise InputError(f"{what} contain NaN or inf ({int((~torch.isfinite(values)).sum())} values)")
    if values.min() < -SUM_TOLERANCE:
        raise InputError(f"probs must be >= 0, found {values.min().item():g}; pass {logits_option} for scores")
    error = (total - 1).abs().max().item()
    if error > SUM_TOLERANCE:
        raise InputError(
            f"probs do not sum to 1 over the classes (dim 1): largest |sum - 1| = {error:.3g} "
            f"> {SUM_TOLERANCE:g}; apply softmax first, or pass {logits_option}"
        )
    return batched


def check_pair(image: Tensor, scores: Tensor, features: Tensor | None) -> None:
    """Same batch size and image size for image, scores and extra features."""
    if image.shape[0] != scores.shape[0] or image.shape[2:] != scores.shape[2:]:
        raise InputError(
            f"image {_shape(image)} and probabilities {_shape(scores)} differ in batch or image size; "
            "resize the probabilities to the image (bilinear) before the CRF"
        )
    if features is not None and (features.shape[0] != image.shape[0] or features.shape[2:] != image.shape[2:]):
        raise InputError(f"features {_shape(features)} must match the image {_shape(image)} in N, H and W")


def check_features(features: Tensor | None) -> Tensor | None:
    """Extra bilateral feature channels (N, F, H, W) or (F, H, W), finite floats."""
    if features is None:
        return None
    batched = _batched(features, "features", "(N, F, H, W)")
    if not batched.is_floating_point() or not torch.isfinite(batched).all():
        raise InputError("features must be finite floating-point values (already divided by their bandwidths)")
    return batched
