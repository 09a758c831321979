"""Atrous Spatial Pyramid Pooling — the one ASPP of every DeepLab version.

- DeepLab v2 (§3.3): parallel atrous branches on the last feature map, one per rate
  (ASPP-L 6/12/18/24, ASPP-S 2/4/8/12), each predicting class logits; the branch
  logits are **summed** (``sum_branches=True``).
- DeepLab v3 (§3.3): a 1×1 conv + one 3×3 atrous conv per rate (6/12/18 at OS16,
  doubled at OS8) + **image pooling**, each with BN + ReLU, concatenated and projected
  by a 1×1 conv (256) + BN + ReLU.
- DeepLab v3+ (§3.2): the same with atrous **separable** convs (``separable=True``).

Image pooling averages the whole feature map. A model trained on crops smaller than its
test frames then sees a different image-level feature at test time; TF DeepLab's
``image_pooling_crop_size`` averages over a training-crop-sized window instead
(``window``; :func:`pooling_window` converts the crop from pixels to feature cells).

Module names follow torchvision's ``ASPP`` (``convs.i``, ``project``) so its
checkpoints map key for key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from atrous.errors import ConfigError
from atrous.nn import ConvNormAct, SeparableConv2d
from atrous.nn.atrous_conv import AtrousConv2d
from atrous.nn.conv import AtrousConvNormAct
from atrous.nn.layout import memory_format_of

BranchFactory = Callable[[int, int, int], nn.Module]


def rates_for_output_stride(
    base_rates: Sequence[int], output_stride: int, base_output_stride: int = 16
) -> tuple[int, ...]:
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


def pooling_window(crop_size: int | Sequence[int] | None, output_stride: int) -> tuple[int, int] | None:
    """Feature cells covered by a ``crop_size`` (pixels, one size or (H, W)) input crop at
    ``output_stride``: ``(crop − 1) // output_stride + 1`` per side, as TF DeepLab; None stays None."""
    if crop_size is None:
        return None
    size = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ConfigError(f"image_pool_crop must be a positive crop size in pixels, S or [H, W]; got {crop_size!r}")
    return ((size[0] - 1) // output_stride + 1, (size[1] - 1) // output_stride + 1)


def window_mean(x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) → (N, C, H, W): each cell gets the mean of the ``window``-sized block
    centred on it, shifted to lie inside the map at the borders; a window no smaller
    than the map gives every cell the global mean.

    Written with cumulative sums and index arithmetic on the symbolic size rather than
    ``avg_pool2d``, whose kernel would be fixed at export time: the exported graph
    gives the same numbers at every input size.
    """
    for dim, limit in ((2, window[0]), (3, window[1])):
        length = x.shape[dim]
        traced = isinstance(length, torch.Tensor)  # under torch.jit.trace sizes are tensors
        extent = length.clamp(max=limit) if traced else torch.sym_min(limit, length)
        sums = torch.cat([torch.zeros_like(x.narrow(dim, 0, 1)), x.cumsum(dim)], dim=dim)
        start = (torch.arange(length, device=x.device) - limit // 2).clamp(min=0)
        last = (length - extent).to(start.dtype) if traced else torch.full_like(start, length - extent)
        start = torch.minimum(start, last)
        x = (sums.index_select(dim, start + extent) - sums.index_select(dim, start)) / extent
    return x


class ImagePooling(nn.Sequential):
    """DeepLab v3 image-level features: average pool → 1×1 conv → BN → ReLU → upsample.

    (N, C_in, H, W) → (N, C_out, H, W). By default the pool is the global mean and the
    upsampling of its 1×1 map a broadcast. With ``window=(h, w)`` each cell instead
    pools the h×w block around it (:func:`window_mean`); on maps no larger than the
    window (e.g. the training crops) that is the global mean again. TF DeepLab's
    ``image_pooling_crop_size`` pools the same windows (valid positions, then bilinear
    upsampling); centring each cell's window instead keeps the map's size, so the
    graph exports with dynamic input sizes.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
        window: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(
            GlobalAveragePool(),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            norm_layer(out_channels),
            nn.ReLU(inplace=True),
        )
        self.window = None if window is None else (int(window[0]), int(window[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        if self.window is not None:
            local = window_mean(x, self.window)
            for layer in list(self)[1:]:  # the 1×1 conv, BN and ReLU
                local = layer(local)
            return local
        pooled = super().forward(x)
        if memory_format_of(x) == torch.channels_last:
            # A broadcast view would make ASPP's concat fall back to NCHW, and the
            # projection conv then convert 5 × 256 channels back: materialise it instead.
            return pooled.expand(-1, -1, *size).contiguous(memory_format=torch.channels_last)
        # The broadcast as a nearest resize of the 1×1 map: the same numbers, and it converts
        # to TFLite (whose BROADCAST_TO fails on the NHWC-transposed map).
        return F.interpolate(pooled, size=size, mode="nearest")


def atrous_conv_branch(in_channels: int, out_channels: int, rate: int) -> nn.Module:
    """DeepLab v2 (ResNet) branch: a single 3×3 atrous conv straight to the class logits."""
    return (AtrousConv2d if rate > 1 else nn.Conv2d)(
        in_channels, out_channels, 3, padding=rate, dilation=rate, bias=True
    )


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling: (N, C_in, h, w) → (N, out_channels, h, w).

    Args:
        in_channels: channels of the backbone's final feature map.
        out_channels: channels of every branch (v3: 256) — the number of classes when
            ``sum_branches`` (v2).
        rates: atrous rates of the 3×3 branches.
        image_pool: add the image-level pooling branch (v3).
        image_pool_window: (h, w) feature cells the image pooling averages (None: all).
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
        image_pool_window: tuple[int, int] | None = None,
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
            # Atrous convolutions built as such: at a rate ≥ the feature map, only the centre tap reads it.
            if separable:
                separable_conv = SeparableConv2d(
                    in_channels, out_channels, 3, dilation=rate, norm_layer=norm_layer, skip_dead_taps=rate > 1
                )
                convs.append(separable_conv)
            else:
                block = AtrousConvNormAct if rate > 1 else ConvNormAct
                convs.append(block(in_channels, out_channels, 3, dilation=rate, norm_layer=norm_layer))
        if image_pool:
            convs.append(ImagePooling(in_channels, out_channels, norm_layer, window=image_pool_window))
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
