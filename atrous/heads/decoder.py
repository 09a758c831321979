"""DeepLab v3+ encoder–decoder head (§3.1 of the v3+ paper).

Encoder: ASPP on the final features (256 ch). Decoder: the ASPP output is upsampled
(×4 at OS16) to the OS-4 low-level features, which are first reduced to 48 channels by
a 1×1 conv + BN + ReLU "so they do not outweigh the encoder's rich features";
concatenate, two 3×3 convs of 256 (+ BN + ReLU; atrous separable when ``separable``),
then a 1×1 conv to the classes. ``decoder_convs`` sets how many 3×3 convs (the paper's
Table 2 compares 1, 2 and 3 and keeps 2).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from atrous.errors import ConfigError
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
        image_pool_window: tuple[int, int] | None = None,
        separable: bool = False,
        dropout: float = 0.1,
        decoder_convs: int = 2,
    ) -> None:
        super().__init__()
        if decoder_convs < 1:
            raise ConfigError(f"decoder_convs must be ≥ 1, got {decoder_convs}")
        self.aspp = ASPP(
            in_channels,
            channels,
            rates,
            image_pool=image_pool,
            image_pool_window=image_pool_window,
            separable=separable,
            dropout=dropout,
        )
        self.low_project = ConvNormAct(low_channels, low_level_channels, 1)
        fuse_in = channels + low_level_channels
        block = SeparableConv2d if separable else ConvNormAct
        self.fuse = nn.Sequential(*(block(fuse_in if i == 0 else channels, channels, 3) for i in range(decoder_convs)))
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.num_classes = num_classes

    def forward(self, out: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        encoder = resize(self.aspp(out), low.shape[-2:])
        x = torch.cat([encoder, self.low_project(low)], dim=1)
        return self.classifier(self.fuse(x))
