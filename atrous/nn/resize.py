"""The one interpolation helper: every upsampling of features or logits goes through it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def resize(x: torch.Tensor, size: Sequence[int] | torch.Size) -> torch.Tensor:
    """Bilinearly resize a (N, C, H, W) tensor to ``size`` = (H', W').

    ``align_corners=False`` everywhere (torchvision's convention), so models and
    inference agree and ONNX export maps to one Resize mode.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
