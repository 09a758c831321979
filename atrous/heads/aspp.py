"""Atrous Spatial Pyramid Pooling — the one ASPP of every DeepLab version.

- DeepLab v2 (§3.3): parallel atrous branches on the last feature map, one per rate
  (ASPP-L 6/12/18/24, ASPP-S 2/4/8/12), each predicting class logits; the branch
  logits are **summed** (``sum_branches=True``).
- DeepLab v3 (§3.3): a 1×1 conv + one 3×3 atrous conv per rate (6/12/18 at OS16,
  doubled at OS8) + **image pooling**, each with BN + ReLU, concatenated and projected
  by a 1×1 conv (256) + BN + ReLU.
- DeepLab v3+ (§3.2): the same with atrous **separable** convs (``separable=True``).

Module names follow torchvision's ``ASPP`` (``convs.i``, ``project``) so its
checkpoints map key for key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from atrous.nn import ConvNormAct, SeparableConv2d
from atrous.nn.layout import memory_format_of

BranchFactory = Callable[[int, int, int], nn.Module]


def rates_for_output_stride(base_rates: Sequence[int], output_stride: int, base_output_stride: int = 16) -> tuple[int, ...]:
    """Scale atrous rates defined at ``base_output_stride`` to ``output_stride``.

    DeepLab v3: rates (6, 12, 18) at OS16 become (12, 24, 36) at OS8 and (3, 6, 9) at OS32.
    """
    return tuple(max(1, r * base_output_stride // output_stride) for r in base_rates)


class GlobalAveragePool(nn.Module):
    """Mean over H, W keeping dims: (N, C, H, W) → (N, C, 1, 1).

    Written as a mean rather than ``AdaptiveAvgPool2d(1)`` so ONNX export needs no
    adaptive pooling (a frequent export failure of peer libraries).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


class ImagePooling(nn.Sequential):
    """DeepLab v3 image-level features: global average pool → 1×1 conv → BN → ReLU → broadcast.

    (N, C_in, H, W) → (N, C_out, H, W). Bilinear upsampling of a 1×1 map is a broadcast,
    so it is written as one.
    """

    def __init__(self, in_channels: int, out_channels: int, norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d):
        super().__init__(
            GlobalAveragePool(),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            norm_layer(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = super().forward(x).expand(-1, -1, *size)
        if memory_format_of(x) == torch.channels_last:
            # A broadcast view would make ASPP's concat fall back to NCHW, and the
            # projection conv then convert 5 × 256 channels back: materialise it instead.
            return pooled.contiguous(memory_format=torch.channels_last)
        return pooled


def atrous_conv_branch(in_channels: int, out_channels: int, rate: int) -> nn.Module:
    """DeepLab v2 (ResNet) branch: a single 3×3 atrous conv straight to the class logits."""
    return nn.Conv2d(in_channels, out_channels, 3, padding=rate, dilation=rate, bias=True)


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling: (N, C_in, h, w) → (N, out_channels, h, w).

    Args:
        in_channels: channels of the backbone's final feature map.
        out_channels: channels of every branch (v3: 256) — the number of classes when
            ``sum_branches`` (v2).
        rates: atrous rates of the 3×3 branches.
        image_pool: add the image-level pooling branch (v3).
        separable: atrous depthwise-separable convs in the 3×3 branches (v3+).
        sum_branches: v2 form — no 1×1 branch, no projection; branch outputs are summed.
        branch: v2 branch factory ``(in_channels, out_channels, rate) -> module``
            (default: one 3×3 atrous conv; VGG uses the fc6-fc7-fc8 stack).
        dropout: dropout after the projection (v3 form).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 256,
        rates: Sequence[int] = (6, 12, 18),
        *,
        image_pool: bool = True,
        separable: bool = False,
        sum_branches: bool = False,
        branch: BranchFactory | None = None,
        dropout: float = 0.1,
        norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.rates = tuple(int(r) for r in rates)
        if sum_branches:
            make_branch = branch or atrous_conv_branch
            self.convs = nn.ModuleList(make_branch(in_channels, out_channels, r) for r in self.rates)
            self.project = None
            return
        convs: list[nn.Module] = [ConvNormAct(in_channels, out_channels, 1, norm_layer=norm_layer)]
        for rate in self.rates:
            if separable:
                convs.append(SeparableConv2d(in_channels, out_channels, 3, dilation=rate, norm_layer=norm_layer))
            else:
                convs.append(ConvNormAct(in_channels, out_channels, 3, dilation=rate, norm_layer=norm_layer))
        if image_pool:
            convs.append(ImagePooling(in_channels, out_channels, norm_layer))
        self.convs = nn.ModuleList(convs)
        self.project = nn.Sequential(
            nn.Conv2d(len(convs) * out_channels, out_channels, 1, bias=False),
            norm_layer(out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [conv(x) for conv in self.convs]
        if self.project is None:
            return torch.stack(outputs).sum(0)
        return self.project(torch.cat(outputs, dim=1))
