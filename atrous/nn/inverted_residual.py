"""The inverted residual block of MobileNet v2, v3 and EdgeTPU, with optional squeeze-and-excite.

1×1 expand → BN → act → k×k depthwise (stride, atrous rate) → BN → act → [SE] →
1×1 project → BN (linear: no activation, MobileNet v2 §3.2), plus the input when the
block keeps stride 1 and width. The *fused* form (MobileNet-EdgeTPU's early stages,
Gupta & Tan 2019) expands with one full k×k conv (stride, rate) instead of the 1×1
expansion and the depthwise conv: k×k expand → BN → act → 1×1 project → BN. Parameter names follow torchvision key for key:
``InvertedResidual`` is MobileNetV3's layout (``block.K``, SE ``fc1``/``fc2``, the
projection a ``ConvNormAct``), ``InvertedResidualV2`` is MobileNetV2's (``conv.K``,
the projection's conv and BN flat in the sequence).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.ops import SqueezeExcitation

from atrous.errors import ConfigError
from atrous.nn.conv import ConvNormAct

__all__ = ["InvertedResidual", "InvertedResidualV2", "make_divisible"]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` without losing more than 10 %.

    The rounding of the MobileNet v2/v3 reference code (TF ``_make_divisible``), so
    width multipliers give the same channel counts as torchvision's checkpoints.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class InvertedResidual(nn.Module):
    """MobileNet inverted residual (v2 §3.3, v3 §5) in torchvision MobileNetV3's layout.

    Args:
        in_channels, out_channels: widths of the block's input and output.
        expanded_channels: width of the depthwise stage (``t · in_channels``); no
            expansion conv when it equals ``in_channels``.
        kernel_size: depthwise kernel (3 or 5).
        stride: depthwise stride (1 or 2). dilation: depthwise atrous rate.
        activation: activation after the expansion and the depthwise conv
            (ReLU6 in v2, ReLU or h-swish in v3).
        se_channels: squeeze width of the squeeze-and-excite after the depthwise conv
            (v3: ``make_divisible(expanded / 4)``, hard-sigmoid gate), ``None`` for none.
        norm_layer: normalisation after every conv.
        fused: expand with a full k×k conv (stride, rate) and no depthwise conv
            (MobileNet-EdgeTPU); without expansion (``expanded_channels == in_channels``)
            the fused block is the 1×1 projection alone.
        residual: add the input to the output; default: ``stride == 1`` and equal
            widths. A backbone that turned a stride 2 into an atrous rate passes
            ``False`` so the block computes what its weights were trained for.

    Shapes: (N, in_channels, H, W) → (N, out_channels, ⌈H/stride⌉, ⌈W/stride⌉).
    """

    # Name of the nn.Sequential holding the layers: it fixes the state_dict keys.
    body_name = "block"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        expanded_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        activation: Callable[..., nn.Module] = nn.ReLU6,
        se_channels: int | None = None,
        norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
        residual: bool | None = None,
        fused: bool = False,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ConfigError(f"inverted residual stride must be 1 or 2; got {stride!r}")
        if residual is None:
            residual = stride == 1 and in_channels == out_channels
        elif residual and in_channels != out_channels:
            raise ConfigError(f"a residual block needs equal widths; got {in_channels} → {out_channels}")
        self.use_residual = residual
        self.fused = fused
        layers: list[nn.Module] = []
        if fused:
            if expanded_channels == in_channels and stride != 1:
                raise ConfigError("a fused inverted residual without expansion has no conv to carry stride 2")
            if expanded_channels != in_channels:
                layers.append(
                    ConvNormAct(
                        in_channels,
                        expanded_channels,
                        kernel_size,
                        stride=stride,
                        dilation=dilation,
                        norm_layer=norm_layer,
                        activation_layer=activation,
                    )
                )
        elif expanded_channels != in_channels:
            layers.append(
                ConvNormAct(in_channels, expanded_channels, 1, norm_layer=norm_layer, activation_layer=activation)
            )
        if not fused:
            layers.append(
                ConvNormAct(
                    expanded_channels,
                    expanded_channels,
                    kernel_size,
                    stride=stride,
                    dilation=dilation,
                    groups=expanded_channels,
                    norm_layer=norm_layer,
                    activation_layer=activation,
                )
            )
        if se_channels is not None:
            layers.append(SqueezeExcitation(expanded_channels, se_channels, scale_activation=nn.Hardsigmoid))
        layers.extend(self._projection(expanded_channels, out_channels, norm_layer))
        self.add_module(self.body_name, nn.Sequential(*layers))
        self.out_channels = out_channels

    @staticmethod
    def _projection(in_channels: int, out_channels: int, norm_layer: Callable[..., nn.Module]) -> list[nn.Module]:
        """The linear 1×1 projection (no activation: MobileNet v2's linear bottleneck)."""
        return [ConvNormAct(in_channels, out_channels, 1, norm_layer=norm_layer, activation_layer=None)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) → (N, C_out, ⌈H/stride⌉, ⌈W/stride⌉)."""
        out = getattr(self, self.body_name)(x)
        if self.use_residual:
            out += x  # in place, as torchvision: a fresh sum of a large map costs a page-faulted allocation
        return out


class InvertedResidualV2(InvertedResidual):
    """The same block in torchvision MobileNetV2's layout (``conv.K``, flat projection)."""

    body_name = "conv"

    @staticmethod
    def _projection(in_channels: int, out_channels: int, norm_layer: Callable[..., nn.Module]) -> list[nn.Module]:
        return [nn.Conv2d(in_channels, out_channels, 1, bias=False), norm_layer(out_channels)]
