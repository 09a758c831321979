"""``fold_bn``: every foldable BatchNorm merged into the convolution before it (:mod:`atrous.fold`)."""

from __future__ import annotations

from torch import Tensor, nn

from atrous.fold import fold_batchnorm
from atrous.transforms.registry import register_transform

__all__ = ["fold_bn"]


@register_transform("fold_bn")
def fold_bn(model: nn.Module, *, example: Tensor | None = None) -> nn.Module:
    """BatchNorm folded into the convolutions before it; the model is put in eval mode.

    ``example`` (1, 3, H, W) traces which convolution feeds which BN (default: zeros of
    the model's minimum input size, at least 64). Equivalence: float rounding of the
    folded weights (≈ 1e-5 relative), labels equal.
    """
    return fold_batchnorm(model, example, inplace=True)
