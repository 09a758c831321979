"""MobileNet v2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018).

Layout and names are torchvision's ``MobileNetV2``: ``features.0`` the 3×3 stem,
``features.1..17`` inverted residuals (``.conv``), ``features.18`` the 1×1 conv to 1280,
``classifier.1`` the Linear, so a torchvision ImageNet state_dict loads with
``strict=True``. 3.50 M parameters and 301 M MAdds at 224² (paper: 3.4 M / 300 M;
TF-slim's table: 3.47 M / 300 M).

Features (α = 1): "low" = ``features.3`` (24 ch, OS 4), "mid" = ``features.6``
(32 ch, OS 8), "out" = ``features.17`` (320 ch): the last inverted residual, without
the 1×1 → 1280 conv, as the MobileNet v2 paper's DeepLab v3 (§6.3) and TF DeepLab
(``final_endpoint="layer_18"``) use it. ``features.18`` is part of the classifier
form only (``num_classes`` given); loading torchvision weights into the feature form
drops it with the classifier (``classifier_prefixes``, ``atrous.load_backbone_weights``).
"""

from __future__ import annotations

from typing import Annotated

from torch import nn

from atrous.backbones._mobilenet import MobileNetBackbone, check_width_mult, dropout_linear, level_taps
from atrous.backbones._stride import plan_stages
from atrous.errors import ConfigError
from atrous.limits import AtLeast
from atrous.nn import ConvNormAct
from atrous.nn.inverted_residual import InvertedResidualV2, make_divisible
from atrous.registry import register_backbone

__all__ = ["MobileNetV2", "mobilenet_v2"]

# (expansion t, output channels c, repeats n, stride s of the first repeat): paper Table 2.
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class MobileNetV2(MobileNetBackbone):
    """MobileNet v2 backbone; with ``num_classes`` also its ImageNet classifier.

    Shapes: (N, 3, H, W) → {"low": (N, 24α, ⌈H/4⌉, ⌈W/4⌉), "mid": (N, 32α, ⌈H/8⌉, ⌈W/8⌉),
    "out": (N, 320α, ⌈H/OS⌉, ⌈W/OS⌉)} (channels rounded to multiples of 8).
    """

    deeplab_versions = (*MobileNetBackbone.deeplab_versions, "lraspp")  # MobileNet v3's Lite R-ASPP

    # The 1×1 → 1280 conv features.18 exists in the classifier form only.
    classifier_prefixes = ("features.18.", "classifier.")

    def __init__(
        self,
        *,
        output_stride: int = 32,
        num_classes: int | None = None,
        width_mult: float = 1.0,
        dropout: float = 0.2,
        slim_rates: bool = False,
        divisible_by: int = 8,
    ) -> None:
        width_mult = check_width_mult(width_mult)
        if isinstance(divisible_by, bool) or not isinstance(divisible_by, int) or divisible_by < 1:
            raise ConfigError(f"divisible_by must be a positive integer (8 or 1); got {divisible_by!r}")
        stem = make_divisible(32 * width_mult, divisible_by)
        last = make_divisible(1280 * max(1.0, width_mult), divisible_by)
        blocks = [
            (t, make_divisible(c * width_mult, divisible_by), s if i == 0 else 1)
            for t, c, n, s in _SETTINGS
            for i in range(n)
        ]
        strides = [2] + [s for _, _, s in blocks]
        plan = plan_stages(strides, output_stride)
        layers: list[nn.Module] = [ConvNormAct(3, stem, 3, stride=2, activation_layer=nn.ReLU6)]
        channels = [stem]
        for (t, width, stride), geometry in zip(blocks, plan[1:]):
            # Like torchvision's dilated MobileNetV3 (and unlike ResNet), the block that lost
            # its stride already uses the new rate (geometry.dilation): one convention for the
            # MobileNet family. TF-slim (and so every TF DeepLab model) keeps the old rate
            # there (first_dilation): ``slim_rates=True`` builds that, for imported weights.
            layers.append(
                InvertedResidualV2(
                    channels[-1],
                    width,
                    expanded_channels=int(round(channels[-1] * t)),
                    stride=geometry.stride,
                    dilation=geometry.first_dilation if slim_rates else geometry.dilation,
                    activation=nn.ReLU6,
                    residual=stride == 1 and channels[-1] == width,
                )
            )
            channels.append(width)
        classifier = None
        if num_classes is not None:
            # The 1×1 → 1280 conv feeds only the classifier: the feature form leaves it out
            # (no unused parameters under DDP, 0.4 M fewer weights).
            layers.append(ConvNormAct(channels[-1], last, 1, activation_layer=nn.ReLU6))
            channels.append(last)
            classifier = dropout_linear(last, num_classes, dropout)
        super().__init__(
            nn.Sequential(*layers),
            taps=level_taps(strides, len(blocks)),
            channels=channels,
            output_stride=output_stride,
            classifier=classifier,
        )


@register_backbone("mobilenet_v2")
def mobilenet_v2(
    *,
    output_stride: int = 32,
    num_classes: int | None = None,
    width_mult: float = 1.0,
    slim_rates: bool = False,
    divisible_by: Annotated[int, AtLeast(1)] = 8,
) -> MobileNetV2:
    """MobileNet v2 at ``output_stride`` 8/16/32, width multiplier ``width_mult`` (α).

    ``slim_rates``: the block whose stride became a rate keeps the previous rate, as
    TF-slim builds it (needed by weights trained in TensorFlow, e.g. ``atrous convert``).
    ``divisible_by``: channel counts are rounded to multiples of it (8, the paper's
    code; TF DeepLab builds α ≠ 1 with 1, e.g. 12 channels where α = 0.5 gives 16).
    """
    return MobileNetV2(
        output_stride=output_stride,
        num_classes=num_classes,
        width_mult=width_mult,
        slim_rates=slim_rates,
        divisible_by=divisible_by,
    )
