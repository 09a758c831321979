"""The one interpolation helper: every upsampling of features or logits goes through it.

``scaled_size`` is the one rule for the size of an image resized by a scale factor
(multi-scale inputs in training, DeepLab v2 §3.3, and test-time multi-scale inference).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch.fx.experimental.symbolic_shapes import statically_known_true

from atrous.errors import ConfigError


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


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(H, W) of an image resized by ``scale``: ``max(1, round(H · s))`` on each side (halves up).

    Computed in integers (s as a fraction p/q: ⌊(2Hp + q) / 2q⌋), so symbolic sizes
    (``torch.export`` with dynamic H, W) and traced ones (``jit.trace``) stay exact
    expressions of the input size instead of being frozen or guarded.
    """
    ratio = Fraction(scale).limit_denominator(1000)
    p, q = ratio.numerator, ratio.denominator
    sizes = ((2 * side * p + q) // (2 * q) for side in (height, width))
    return tuple(max(1, s) if isinstance(s, int) else s for s in sizes)  # type: ignore[return-value]


def check_scales(scales: Sequence[float], name: str = "scales") -> tuple[float, ...]:
    """``scales`` as a tuple of positive floats, else ``ConfigError`` naming ``name``."""
    try:  # a string is no list of scales ("12" would read as 1 and 2)
        values = () if isinstance(scales, str) else tuple(float(s) for s in scales if not isinstance(s, bool))
    except (TypeError, ValueError):
        values = ()
    if not values or len(values) != len(scales) or any(not 0 < s < float("inf") for s in values):
        raise ConfigError(f"{name} must be positive numbers, e.g. (0.5, 1.0, 1.5); got {scales!r}")
    return values


def _known_equal(a: object, b: object) -> bool:
    """``a == b`` when it holds for every size (plain ints, or provable symbolically)."""
    same = a == b
    return statically_known_true(same) if isinstance(same, (bool, torch.SymBool)) else False
