"""Lite R-ASPP, the MobileNet v3 segmentation head (Howard et al. 2019, §6.4).

High-level branch (OS16): 1×1 conv + BN + ReLU, gated by a pooled branch (global
average pool → 1×1 conv → sigmoid), upsampled to the OS-8 skip; both levels predict
class logits, which are summed. The paper pools with a 49×49 kernel and stride
(16, 20) at 1024×2048; like torchvision we pool globally, which matches the paper's
setting on its training crops and exports without adaptive pooling. Module names
match torchvision's ``LRASPPHead``.
"""

from __future__ import annotations

import torch
from torch import nn

from atrous.heads.aspp import GlobalAveragePool
from atrous.nn import resize


class LRASPPHead(nn.Module):
    """(out: (N, C_high, h, w), mid: (N, C_low, 2h, 2w)) → (N, num_classes, 2h, 2w)."""

    def __init__(self, high_channels: int, low_channels: int, num_classes: int, *, channels: int = 128) -> None:
        super().__init__()
        self.cbr = nn.Sequential(
            nn.Conv2d(high_channels, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
        )
        self.scale = nn.Sequential(GlobalAveragePool(), nn.Conv2d(high_channels, channels, 1, bias=False), nn.Sigmoid())
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
        self.high_classifier = nn.Conv2d(channels, num_classes, 1)
        self.num_classes = num_classes

    def forward(self, out: torch.Tensor, mid: torch.Tensor) -> torch.Tensor:
        x = self.cbr(out) * self.scale(out)
        x = resize(x, mid.shape[-2:])
        return self.low_classifier(mid) + self.high_classifier(x)
