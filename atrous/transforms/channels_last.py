"""``channels_last``: parameters in NHWC memory order, so convolutions run in it on CPU and GPU."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from atrous.transforms.registry import register_transform

__all__ = ["channels_last"]


@register_transform("channels_last", trainable=True)
def channels_last(model: nn.Module, *, example: Tensor | None = None) -> nn.Module:
    """Weights in channels_last memory format (callers feed channels_last inputs).

    Equivalence: the same arithmetic in another order of the loops: equal up to float
    summation order.
    """
    return model.to(memory_format=torch.channels_last)
