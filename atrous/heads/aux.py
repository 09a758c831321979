"""Auxiliary FCN head on an intermediate level (PSPNet-style deep supervision).

Layout of torchvision's ``FCNHead`` (3×3 conv to C/4 + BN + ReLU + dropout + 1×1 conv),
so torchvision's ``aux_classifier`` weights load by prefix rename.
"""

from __future__ import annotations

from torch import nn


class AuxHead(nn.Sequential):
    """(N, C_in, h, w) → (N, num_classes, h, w)."""

    def __init__(self, in_channels: int, num_classes: int, *, dropout: float = 0.1) -> None:
        hidden = max(in_channels // 4, 1)
        super().__init__(
            nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(hidden, num_classes, 1),
        )
