"""DeepLab v3+ encoder–decoder head (§3.1 of the v3+ paper).

Encoder: ASPP on the final features (256 ch). Decoder: the ASPP output is upsampled
(×4 at OS16) to the OS-4 low-level features, which are first reduced to 48 channels by
a 1×1 conv + BN + ReLU "so they do not outweigh the encoder's rich features";
concatenate, two 3×3 convs of 256 (+ BN + ReLU; atrous separable when ``separable``),
then a 1×1 conv to the classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from atrous.heads.aspp import ASPP
from atrous.nn import ConvNormAct, SeparableConv2d, resize


class DeepLabV3PlusHead(nn.Module):
    """(out: (N, C_out, h, w), low: (N, C_low, 4h', 4w')) → (N, num_classes, H/4, W/4)."""

    def __init__(
        self,
        in_channels: int,
        low_channels: int,
        num_classes: int,
        rates: Sequence[int],
        *,
        channels: int = 256,
        low_level_channels: int = 48,
        image_pool: bool = True,
        separable: bool = False,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.aspp = ASPP(in_channels, channels, rates, image_pool=image_pool, separable=separable, dropout=dropout)
        self.low_project = ConvNormAct(low_channels, low_level_channels, 1)
        fuse_in = channels + low_level_channels
        if separable:
            self.fuse = nn.Sequential(SeparableConv2d(fuse_in, channels, 3), SeparableConv2d(channels, channels, 3))
        else:
            self.fuse = nn.Sequential(ConvNormAct(fuse_in, channels, 3), ConvNormAct(channels, channels, 3))
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, out: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        encoder = resize(self.aspp(out), low.shape[-2:])
        x = torch.cat([encoder, self.low_project(low)], dim=1)
        return self.classifier(self.fuse(x))
