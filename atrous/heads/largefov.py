"""DeepLab v1 classifier: fc6 (atrous) → fc7 → fc8, VGG-16's fully connected layers as convs.

- DeepLab-LargeFOV: fc6 = 3×3, rate 12, 1024 ch; fc7 = 1×1, 1024 ch (§4 of the brief).
- The original DeepLab: fc6 = 7×7, rate 4, 4096 ch; fc7 = 1×1, 4096 ch.
Dropout 0.5 follows fc6 and fc7; fc8 maps to the classes. The same stack is one
branch of DeepLab v2's ASPP on VGG-16.
"""

from __future__ import annotations

from torch import nn


class LargeFOV(nn.Sequential):
    """fc6-fc7-fc8 head: (N, C_in, h, w) → (N, num_classes, h, w)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        rate: int = 12,
        kernel_size: int = 3,
        hidden_channels: int = 1024,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.fc6 = nn.Conv2d(in_channels, hidden_channels, kernel_size, padding=rate * (kernel_size - 1) // 2, dilation=rate)
        self.relu6 = nn.ReLU(inplace=True)
        self.drop6 = nn.Dropout2d(dropout)
        self.fc7 = nn.Conv2d(hidden_channels, hidden_channels, 1)
        self.relu7 = nn.ReLU(inplace=True)
        self.drop7 = nn.Dropout2d(dropout)
        self.fc8 = nn.Conv2d(hidden_channels, num_classes, 1)
