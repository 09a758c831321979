"""DeepLab v1 classifier: fc6 (atrous) → fc7 → fc8, VGG-16's fully connected layers as convs.

- DeepLab-LargeFOV: fc6 = 3×3, rate 12, 1024 ch; fc7 = 1×1, 1024 ch (§4 of the brief).
- The original DeepLab: fc6 = 7×7, rate 4, 4096 ch; fc7 = 1×1, 4096 ch.
Dropout 0.5 follows fc6 and fc7; fc8 maps to the classes. The same stack is one
branch of DeepLab v2's ASPP on VGG-16.

**Multi-scale features (DeepLab-MSc, v1 §4 "Multi-scale prediction")**: a two-layer
MLP — 128 3×3 filters, then 128 1×1 filters — on the input image and on each of the
first four max-pooling outputs; the five 128-channel maps are concatenated with fc7's
features, so fc8 reads 640 more channels. As in the released ``DeepLab-MSc-LargeFOV``
prototxt, each MLP's 3×3 conv has the stride that brings its input to the output stride
(image 8, pool1 4, pool2 2, pool3 and pool4 1 at OS 8; padding 1), and ReLU + dropout
0.5 follow both of its layers. (The prototxt gives every MLP its own 1×1 conv to the
classes and sums them with fc8 — the same function as one fc8 on the concatenation,
which is how the paper describes it and how it is written here.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from atrous.nn.atrous_conv import AtrousConv2d

MSC_CHANNELS = 128


class MScBranch(nn.Sequential):
    """One MSc MLP: 3×3 conv (128, ``stride``, pad 1) → ReLU → dropout → 1×1 conv (128) → ReLU → dropout.

    (N, C_in, h, w) → (N, 128, ⌈h/stride⌉, ⌈w/stride⌉).
    """

    def __init__(self, in_channels: int, stride: int, *, dropout: float = 0.5) -> None:
        super().__init__(
            nn.Conv2d(in_channels, MSC_CHANNELS, 3, stride=stride, padding=1),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(MSC_CHANNELS, MSC_CHANNELS, 1),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )


class LargeFOV(nn.Module):
    """fc6-fc7-fc8 head: (N, C_in, h, w) [, MSc inputs] → (N, num_classes, h, w).

    ``msc_inputs``: (channels, stride to the output) of each multi-scale-feature input,
    e.g. ``[(3, 8), (64, 4), (128, 2), (256, 1), (512, 1)]`` for the image and pool1..4
    at OS 8; ``forward(x, *features)`` then takes those maps in the same order.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        rate: int = 12,
        kernel_size: int = 3,
        hidden_channels: int = 1024,
        dropout: float = 0.5,
        msc_inputs: Sequence[tuple[int, int]] = (),
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        fc6 = AtrousConv2d if rate > 1 else nn.Conv2d
        self.fc6 = fc6(in_channels, hidden_channels, kernel_size, padding=rate * (kernel_size - 1) // 2, dilation=rate)
        self.relu6 = nn.ReLU(inplace=True)
        self.drop6 = nn.Dropout2d(dropout)
        self.fc7 = nn.Conv2d(hidden_channels, hidden_channels, 1)
        self.relu7 = nn.ReLU(inplace=True)
        self.drop7 = nn.Dropout2d(dropout)
        self.fc8 = nn.Conv2d(hidden_channels + MSC_CHANNELS * len(msc_inputs), num_classes, 1)
        self.msc = (
            nn.ModuleList(MScBranch(c, stride, dropout=dropout) for c, stride in msc_inputs) if msc_inputs else None
        )

    def forward(self, x: torch.Tensor, *msc_features: torch.Tensor) -> torch.Tensor:
        x = self.drop7(self.relu7(self.fc7(self.drop6(self.relu6(self.fc6(x))))))
        if self.msc is not None:
            x = torch.cat([x, *(branch(f) for branch, f in zip(self.msc, msc_features, strict=True))], dim=1)
        return self.fc8(x)
