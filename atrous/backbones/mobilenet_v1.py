"""MobileNet v1 (Howard et al., "MobileNets: Efficient Convolutional Neural Networks for
Mobile Vision Applications", 2017).

A 3×3 stride-2 conv and 13 depthwise-separable blocks (3×3 depthwise → BN → ReLU6 →
1×1 pointwise → BN → ReLU6; paper Table 1), channels scaled by the width multiplier α
as TF-slim's ``mobilenet_v1`` does: ``max(int(c·α), 8)``. Classifier: global average
pool → dropout → fully connected 1024α → classes. At 224²: 4.23 M / 569 M MAdds
(paper 4.2 M / 569 M); α = 0.5: 1.33 M / 149 M (paper 1.3 M / 149 M). torchvision has
no MobileNet v1; names are ``features.K`` (``.depthwise`` / ``.pointwise``) and
``classifier.1`` like our v2.

Features (α = 1): "low" = ``features.3`` (128 ch, OS 4), "mid" = ``features.5``
(256 ch, OS 8), "out" = ``features.13`` (1024 ch, OS 8/16/32).
"""

from __future__ import annotations

from torch import nn

from atrous.backbones._mobilenet import MobileNetBackbone, check_width_mult, dropout_linear, level_taps
from atrous.backbones._stride import plan_stages
from atrous.nn import ConvNormAct, SeparableConv2d
from atrous.registry import register_backbone

__all__ = ["PAPER_MADDS_BY_RESOLUTION", "PAPER_TABLE_BY_WIDTH", "MobileNetV1", "mobilenet_v1", "paper_counts"]

# The paper's ImageNet classifier costs (1000 classes). Table 6, width multiplier α at
# 224²: (parameters, multiply-adds). Table 7, resolution at α = 1: multiply-adds; the
# parameters do not depend on the resolution. Both printed rounded (0.1 M, 1 M).
PAPER_TABLE_BY_WIDTH = {1.0: (4.2e6, 569e6), 0.75: (2.6e6, 325e6), 0.5: (1.3e6, 149e6), 0.25: (0.5e6, 41e6)}
PAPER_MADDS_BY_RESOLUTION = {224: 569e6, 192: 418e6, 160: 290e6, 128: 186e6}

_STEM_WIDTH = 32
# (pointwise output channels, depthwise stride) of the 13 separable blocks: paper Table 1.
_BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)  # fmt: skip
_MIN_WIDTH = 8  # TF-slim's min_depth
# TF-slim's dropout_keep_prob = 0.999 before the logits.
_DROPOUT = 0.001


def paper_counts(width_mult: float, resolution: int) -> tuple[float, float, str]:
    """(parameters, multiply-adds, where from) of the classifier at α = ``width_mult``, ``resolution``².

    Printed in Table 6 (α at 224) or Table 7 (resolution at α = 1); any other pair is
    Table 6's cost × ρ², ρ = resolution / 224 (§3.4: "the resolution multiplier ... reduces
    computational cost by ρ²").
    """
    params, madds = PAPER_TABLE_BY_WIDTH[width_mult]
    if resolution == 224:
        return params, madds, "Table 6"
    if width_mult == 1.0:
        return params, PAPER_MADDS_BY_RESOLUTION[resolution], "Table 7"
    return params, madds * (resolution / 224) ** 2, "Table 6 × ρ²"


def _scaled(channels: int, width_mult: float) -> int:
    return max(int(channels * width_mult), _MIN_WIDTH)


class MobileNetV1(MobileNetBackbone):
    """MobileNet v1 backbone; with ``num_classes`` also its ImageNet classifier.

    Shapes: (N, 3, H, W) → {"low": (N, 128α, ⌈H/4⌉, ⌈W/4⌉), "mid": (N, 256α, ⌈H/8⌉, ⌈W/8⌉),
    "out": (N, 1024α, ⌈H/OS⌉, ⌈W/OS⌉)}.
    """

    classifier_prefixes = ("classifier.",)

    def __init__(self, *, output_stride: int = 32, num_classes: int | None = None, width_mult: float = 1.0) -> None:
        width_mult = check_width_mult(width_mult)
        strides = [2] + [stride for _, stride in _BLOCKS]
        plan = plan_stages(strides, output_stride)
        channels = [_scaled(_STEM_WIDTH, width_mult)]
        layers: list[nn.Module] = [ConvNormAct(3, channels[0], 3, stride=2, activation_layer=nn.ReLU6)]
        for (width, _), geometry in zip(_BLOCKS, plan[1:]):
            width = _scaled(width, width_mult)
            # MobileNet family convention (torchvision's dilated MobileNetV3): the block that
            # lost its stride already uses the new rate. TF-slim would keep the old one.
            layers.append(
                SeparableConv2d(
                    channels[-1],
                    width,
                    3,
                    stride=geometry.stride,
                    dilation=geometry.dilation,
                    activation_layer=nn.ReLU6,
                )
            )
            channels.append(width)
        classifier = dropout_linear(channels[-1], num_classes, _DROPOUT)
        super().__init__(
            nn.Sequential(*layers),
            taps=level_taps(strides, len(layers) - 1),
            channels=channels,
            output_stride=output_stride,
            classifier=classifier,
        )


@register_backbone("mobilenet_v1")
def mobilenet_v1(*, output_stride: int = 32, num_classes: int | None = None, width_mult: float = 1.0) -> MobileNetV1:
    """MobileNet v1 at ``output_stride`` 8/16/32, width multiplier ``width_mult`` (α)."""
    return MobileNetV1(output_stride=output_stride, num_classes=num_classes, width_mult=width_mult)
