"""``bf16``: the model's floating-point parameters and buffers cast to bfloat16."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from atrous.transforms.registry import register_transform

__all__ = ["bf16"]


@register_transform("bf16")
def bf16(model: nn.Module, *, example: Tensor | None = None) -> nn.Module:
    """Parameters and buffers in bfloat16 (inputs must be cast too; fold BN first, in float32).

    Equivalence: bfloat16 rounding (8 bits of mantissa): logits within a few percent of
    their range, ≥ 97 % of labels equal to float32's on a random-weight model.
    """
    return model.to(torch.bfloat16)
