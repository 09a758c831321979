"""Multi-scale inputs with max fusion (DeepLab v2 §3.3, "MSC"; the v2 paper's Table 3 and 4).

The image is resized by each scale (the paper: 1, 0.75, 0.5), every copy runs through
the same network, the head logits of every scale are resized to the logits size of the
largest scale and fused by an elementwise max over scales. Training (paper §4.1)
supervises every scale and the fusion: the model returns each scale's logits beside the
fused ones (keys ``"scale_1"``, ``"scale_0.75"`` … next to ``"out"``) and the loss sums
the cross-entropy of all of them.

The option is ``create_model(name, ..., input_scales=(1.0, 0.75, 0.5))``, valid on every
model; it adds no parameters, so the weights (and state_dict keys) are those of the
single-scale model.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from atrous.errors import ConfigError
from atrous.nn import check_scales, resize

__all__ = ["PAPER_SCALES", "SCALE_OUTPUT_PREFIX", "input_scales_option", "max_fuse", "scale_output_key"]

PAPER_SCALES = (1.0, 0.75, 0.5)
SCALE_OUTPUT_PREFIX = "scale_"


def input_scales_option(value: Sequence[float] | None) -> list[float] | None:
    """The checked ``input_scales=`` option: None, or two or more distinct positive scales."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(f"input_scales must be a list of scales, e.g. [1.0, 0.75, 0.5]; got {value!r}")
    scales = check_scales(value, "input_scales")
    if len(scales) < 2 or len(set(scales)) != len(scales):
        raise ConfigError(
            f"input_scales needs two or more distinct scales (DeepLab v2: [1.0, 0.75, 0.5]); got {list(value)!r}; "
            "leave it out for a single-scale model"
        )
    return list(scales)


def scale_output_key(scale: float) -> str:
    """The training-output key of one scale's logits: 0.75 → ``"scale_0.75"``."""
    return f"{SCALE_OUTPUT_PREFIX}{scale:g}"


def max_fuse(logits: Sequence[torch.Tensor], size: Sequence[int] | torch.Size) -> torch.Tensor:
    """Elementwise max over scales of (N, K, h_s, w_s) logits, each first resized to ``size``: → (N, K, *size)."""
    return functools.reduce(torch.maximum, (resize(scores, size) for scores in logits))
