"""The one interpolation helper: every upsampling of features or logits goes through it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.fx.experimental.symbolic_shapes import statically_known_true


def resize(x: torch.Tensor, size: Sequence[int] | torch.Size) -> torch.Tensor:
    """Bilinearly resize a (N, C, H, W) tensor to ``size`` = (H', W').

    ``align_corners=False`` everywhere (torchvision's convention), so models and
    inference agree and ONNX export maps to one Resize mode.
    """
    # Symbolic sizes (torch.export with dynamic H, W) stay symbolic: int() would freeze
    # them, and a plain == would add a guard the exporter cannot prove for every size.
    size = tuple(s if isinstance(s, torch.SymInt) else int(s) for s in size[:2])
    if statically_known_true(x.shape[-2] == size[0]) and statically_known_true(x.shape[-1] == size[1]):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
