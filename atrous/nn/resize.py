"""The one interpolation helper: every upsampling of features or logits goes through it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.fx.experimental.symbolic_shapes import statically_known_true


def resize(x: torch.Tensor, size: Sequence[int] | torch.Size, *, align_corners: bool = False) -> torch.Tensor:
    """Bilinearly resize a (N, C, H, W) tensor to ``size`` = (H', W').

    ``align_corners=False`` is torchvision's convention and atrous's default everywhere;
    ``True`` is TensorFlow DeepLab's (its models' logits were trained against it, so
    imported TF models upsample that way: ``DeepLab(align_corners=True)``).
    """
    # Symbolic or traced sizes (torch.export with dynamic H, W; jit.trace) stay as they
    # are: int() would freeze them, and a plain == would add a guard the exporter cannot
    # prove for every size.
    size = tuple(s if isinstance(s, (torch.SymInt, torch.Tensor)) else int(s) for s in size[:2])
    if _known_equal(x.shape[-2], size[0]) and _known_equal(x.shape[-1], size[1]):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def _known_equal(a: object, b: object) -> bool:
    """``a == b`` when it holds for every size (plain ints, or provable symbolically)."""
    same = a == b
    return statically_known_true(same) if isinstance(same, (bool, torch.SymBool)) else False
