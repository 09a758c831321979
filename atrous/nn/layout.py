"""Memory-format helpers for code that creates feature maps of its own."""

from __future__ import annotations

import torch


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """``torch.channels_last`` for a channels_last (N, C, H, W) tensor with C > 1, else the
    default contiguous format: the format new maps derived from ``x`` should take."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
