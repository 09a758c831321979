"""MobileNet v3 Large and Small (Howard et al., "Searching for MobileNetV3", ICCV 2019).

Layout and names are torchvision's ``MobileNetV3``: ``features.0`` the 3×3 h-swish stem,
``features.1..n`` inverted residuals (``.block``, SE ``fc1``/``fc2``), ``features.n+1`` the
final 1×1 conv (6× the last width), ``classifier.0``/``classifier.3`` the two Linears,
so torchvision ImageNet state_dicts load with ``strict=True``. BN eps 1e-3, momentum
0.01 as torchvision. At 224²: Large 5.48 M / 217 M MAdds (paper 5.4 M / 219 M),
Small 2.54 M / 57 M (paper 2.5 M / 56 M).

Features follow torchvision's segmentation models (``deeplabv3_mobilenet_v3_large``,
``lraspp_mobilenet_v3_large``), which tap each level at the block that enters it:
"low" = first block at OS 4 (Large ``features.2``, 24 ch; Small ``features.1``, 16 ch),
"mid" = first block at OS 8 (Large ``features.4``, 40 ch; Small ``features.2``, 24 ch),
"out" = the final 1×1 conv (Large 960 ch, Small 576 ch).
"""

from __future__ import annotations

from functools import partial

from torch import nn

from atrous.backbones._mobilenet import MobileNetBackbone, check_width_mult, level_taps
from atrous.backbones._stride import plan_stages
from atrous.errors import ConfigError
from atrous.nn import ConvNormAct
from atrous.nn.inverted_residual import InvertedResidual, make_divisible
from atrous.registry import register_backbone

__all__ = ["MobileNetV3", "mobilenet_v3_large", "mobilenet_v3_small"]

_RE, _HS = nn.ReLU, nn.Hardswish

# (kernel, expanded width, output width, squeeze-excite, activation, stride): paper Tables 1 and 2.
_BLOCKS = {
    "large": (
        (3, 16, 16, False, _RE, 1),
        (3, 64, 24, False, _RE, 2),
        (3, 72, 24, False, _RE, 1),
        (5, 72, 40, True, _RE, 2),
        (5, 120, 40, True, _RE, 1),
        (5, 120, 40, True, _RE, 1),
        (3, 240, 80, False, _HS, 2),
        (3, 200, 80, False, _HS, 1),
        (3, 184, 80, False, _HS, 1),
        (3, 184, 80, False, _HS, 1),
        (3, 480, 112, True, _HS, 1),
        (3, 672, 112, True, _HS, 1),
        (5, 672, 160, True, _HS, 2),
        (5, 960, 160, True, _HS, 1),
        (5, 960, 160, True, _HS, 1),
    ),
    "small": (
        (3, 16, 16, True, _RE, 2),
        (3, 72, 24, False, _RE, 2),
        (3, 88, 24, False, _RE, 1),
        (5, 96, 40, True, _HS, 2),
        (5, 240, 40, True, _HS, 1),
        (5, 240, 40, True, _HS, 1),
        (5, 120, 48, True, _HS, 1),
        (5, 144, 48, True, _HS, 1),
        (5, 288, 96, True, _HS, 2),
        (5, 576, 96, True, _HS, 1),
        (5, 576, 96, True, _HS, 1),
    ),
}
_STEM_WIDTH = 16
_HIDDEN_WIDTH = {"large": 1280, "small": 1024}  # width of the classifier's hidden Linear


class MobileNetV3(MobileNetBackbone):
    """MobileNet v3 backbone (``arch`` "large" or "small"); with ``num_classes`` also its classifier.

    Shapes: (N, 3, H, W) → {"low": (N, C_low, ⌈H/4⌉, ⌈W/4⌉), "mid": (N, C_mid, ⌈H/8⌉, ⌈W/8⌉),
    "out": (N, C_out, ⌈H/OS⌉, ⌈W/OS⌉)}; channels in the module docstring (α = 1).
    """

    deeplab_versions = (*MobileNetBackbone.deeplab_versions, "lraspp")  # MobileNet v3's Lite R-ASPP

    classifier_prefixes = ("classifier.",)

    def __init__(
        self,
        arch: str,
        *,
        output_stride: int = 32,
        num_classes: int | None = None,
        width_mult: float = 1.0,
        dropout: float = 0.2,
    ) -> None:
        if arch not in _BLOCKS:
            raise ConfigError(f"MobileNet v3 arch must be 'large' or 'small'; got {arch!r}")
        width_mult = check_width_mult(width_mult)
        norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
        blocks = _BLOCKS[arch]
        strides = [2] + [block[-1] for block in blocks]
        plan = plan_stages(strides, output_stride)
        stem = make_divisible(_STEM_WIDTH * width_mult)
        layers: list[nn.Module] = [ConvNormAct(3, stem, 3, stride=2, norm_layer=norm_layer, activation_layer=_HS)]
        channels = [stem]
        for (kernel, expanded, width, use_se, activation, stride), geometry in zip(blocks, plan[1:]):
            expanded, width = make_divisible(expanded * width_mult), make_divisible(width * width_mult)
            # torchvision's dilated MobileNetV3 (deeplabv3/lraspp_mobilenet_v3_large) gives the
            # block that lost its stride the stage's new rate already (geometry.dilation, not
            # first_dilation as ResNet does); we follow it for checkpoint-exact parity.
            layers.append(
                InvertedResidual(
                    channels[-1],
                    width,
                    expanded_channels=expanded,
                    kernel_size=kernel,
                    stride=geometry.stride,
                    dilation=geometry.dilation,
                    activation=activation,
                    se_channels=make_divisible(expanded // 4) if use_se else None,
                    norm_layer=norm_layer,
                    residual=stride == 1 and channels[-1] == width,
                )
            )
            channels.append(width)
        layers.append(ConvNormAct(channels[-1], 6 * channels[-1], 1, norm_layer=norm_layer, activation_layer=_HS))
        channels.append(6 * channels[-1])
        classifier = None
        if num_classes is not None:
            hidden = make_divisible(_HIDDEN_WIDTH[arch] * width_mult)
            classifier = nn.Sequential(
                nn.Linear(channels[-1], hidden),
                nn.Hardswish(inplace=True),
                nn.Dropout(dropout, inplace=True),
                nn.Linear(hidden, num_classes),
            )
        super().__init__(
            nn.Sequential(*layers),
            taps=level_taps(strides, len(layers) - 1, first=True),
            channels=channels,
            output_stride=output_stride,
            classifier=classifier,
        )


@register_backbone("mobilenet_v3_large")
def mobilenet_v3_large(
    *, output_stride: int = 32, num_classes: int | None = None, width_mult: float = 1.0
) -> MobileNetV3:
    """MobileNet v3 Large at ``output_stride`` 8/16/32, width multiplier ``width_mult`` (α)."""
    return MobileNetV3("large", output_stride=output_stride, num_classes=num_classes, width_mult=width_mult)


@register_backbone("mobilenet_v3_small")
def mobilenet_v3_small(
    *, output_stride: int = 32, num_classes: int | None = None, width_mult: float = 1.0
) -> MobileNetV3:
    """MobileNet v3 Small at ``output_stride`` 8/16/32, width multiplier ``width_mult`` (α)."""
    return MobileNetV3("small", output_stride=output_stride, num_classes=num_classes, width_mult=width_mult)
