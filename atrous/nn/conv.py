"""Convolution blocks: conv → norm → activation, and the (atrous) depthwise-separable conv.

``ConvNormAct`` is torchvision's ``Conv2dNormActivation`` (an ``nn.Sequential`` of
conv ``0``, norm ``1``, activation ``2``), reused so that our parameter names match
torchvision checkpoints key for key; ``AtrousConvNormAct`` is the same block on an
:class:`atrous.nn.atrous_conv.AtrousConv2d`, for the atrous convolutions of the heads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn
from torchvision.ops.misc import Conv2dNormActivation as ConvNormAct
from torchvision.ops.misc import ConvNormActivation

from atrous.nn.atrous_conv import AtrousConv2d

__all__ = ["AtrousConvNormAct", "ConvNormAct", "SeparableConv2d", "same_padding"]


class AtrousConvNormAct(ConvNormActivation):
    """``ConvNormAct`` (same arguments, same parameter names) whose convolution is an
    ``AtrousConv2d``: (N, C_in, H, W) → (N, C_out, H', W')."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, **options: Any) -> None:
        super().__init__(in_channels, out_channels, kernel_size, conv_layer=AtrousConv2d, **options)


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding that keeps the size at stride 1: ``dilation · (k − 1) / 2``."""
    return dilation * (kernel_size - 1) // 2


class SeparableConv2d(nn.Sequential):
    """Atrous depthwise-separable conv (DeepLab v3+ §3.1, MobileNet v1).

    ``depthwise`` (k×k, one filter per channel, ``dilation`` = the atrous rate) →
    norm → activation (when ``act_after_depthwise``) → ``pointwise`` 1×1 → norm →
    activation. Aligned Xception and MobileNet put BN + ReLU after the depthwise conv;
    the original Xception has no non-linearity inside (pass ``act_after_depthwise=False``).

    Chollet's Xception has no norm between depthwise and pointwise either: pass
    ``depthwise_norm=False`` (the depthwise conv then has no bias). ``skip_dead_taps``
    builds the depthwise conv as an ``AtrousConv2d`` (ASPP's separable branches).

    Shapes: (N, in_channels, H, W) → (N, out_channels, ⌈H/stride⌉, ⌈W/stride⌉).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        dilation: int = 1,
        norm_layer: Callable[..., nn.Module] | None = nn.BatchNorm2d,
        activation_layer: Callable[..., nn.Module] | None = nn.ReLU,
        act_after_depthwise: bool = True,
        depthwise_norm: bool = True,
        skip_dead_taps: bool = False,
    ) -> None:
        super().__init__()
        self.depthwise = (AtrousConvNormAct if skip_dead_taps else ConvNormAct)(
            in_channels,
            in_channels,
            kernel_size,
            stride=stride,
            dilation=dilation,
            groups=in_channels,
            norm_layer=norm_layer if depthwise_norm else None,
            activation_layer=activation_layer if act_after_depthwise else None,
            bias=None if depthwise_norm else False,
        )
        self.pointwise = ConvNormAct(
            in_channels, out_channels, 1, norm_layer=norm_layer, activation_layer=activation_layer
        )
