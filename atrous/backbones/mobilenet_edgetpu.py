"""MobileNet-EdgeTPU (Gupta & Tan, "Introducing the Next Generation of On-Device Vision
Models: MobileNetV3 and MobileNetEdgeTPU", Google AI blog, 2019).

The layer list is ``V3_EDGETPU`` of tensorflow/models ``research/slim/nets/mobilenet/
mobilenet_v3.py``: a 3×3 stem (32), then inverted residuals whose early stages are
*fused* (one full 3×3 conv expands, no depthwise conv: the Edge TPU runs full convs
faster than depthwise ones at high resolution), later stages regular ones with 3×3 or
5×5 depthwise kernels, ReLU throughout, no squeeze-and-excite, and a final 1×1 conv to
1280 (kept at 1280 for α < 1: TF's ``finegrain_classification_mode``, as the published
``edge_tpu_075`` model). Channels are rounded to multiples of 8 (TF ``_make_divisible``):
α = 0.75 gives 24, 16, 24, 40, 72, 120, 144, 1280, the widths of the official DeepLab
Cityscapes graph.

At 224² with the 1001-class classifier, that file's layer table gives 4.05 M conv
parameters and 990.7 M MAdds; ``tests/test_backbones_mobilenet.py`` checks ours against
both.

Layout: ``features.0`` the stem, ``features.1..22`` the blocks (``.block``, as
torchvision's MobileNetV3), ``features.23`` the 1×1 conv to 1280, ``classifier.1`` the
Linear. Features: "low" = ``features.4`` (the last OS-4 block, 32α ch), "mid" =
``features.8`` (OS 8, 48α ch), "out" = ``features.23`` (1280 ch): TF DeepLab's
``mobilenet_edgetpu`` feature extractor ends at ``Conv_1`` and its image pooling
averages that map.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from atrous.backbones._mobilenet import MobileNetBackbone, check_width_mult, dropout_linear, level_taps
from atrous.backbones._stride import plan_stages
from atrous.nn import ConvNormAct
from atrous.nn.inverted_residual import InvertedResidual, make_divisible
from atrous.registry import register_backbone

__all__ = ["MobileNetEdgeTPU", "mobilenet_edgetpu"]

# (fused, kernel, expansion factor, output channels, stride[, residual]): ``V3_EDGETPU``.
_BLOCKS: tuple[tuple, ...] = (
    (True, 3, 1, 16, 1),
    (True, 3, 8, 32, 2),
    (True, 3, 4, 32, 1),
    (True, 3, 4, 32, 1),
    (True, 3, 4, 32, 1),
    (True, 3, 8, 48, 2),
    (True, 3, 4, 48, 1),
    (True, 3, 4, 48, 1),
    (True, 3, 4, 48, 1),
    (False, 3, 8, 96, 2),
    (False, 3, 4, 96, 1),
    (False, 3, 4, 96, 1),
    (False, 3, 4, 96, 1),
    (False, 3, 8, 96, 1, False),  # the one stride-1 block without a shortcut
    (False, 3, 4, 96, 1),
    (False, 3, 4, 96, 1),
    (False, 3, 4, 96, 1),
    (False, 5, 8, 160, 2),
    (False, 5, 4, 160, 1),
    (False, 5, 4, 160, 1),
    (False, 5, 4, 160, 1),
    (False, 3, 8, 192, 1),
)
_STEM_WIDTH = 32
_LAST_WIDTH = 1280


class MobileNetEdgeTPU(MobileNetBackbone):
    """MobileNet-EdgeTPU backbone; with ``num_classes`` also its ImageNet classifier.

    Shapes: (N, 3, H, W) → {"low": (N, 32α, ⌈H/4⌉, ⌈W/4⌉), "mid": (N, 48α, ⌈H/8⌉, ⌈W/8⌉),
    "out": (N, 1280·max(1, α), ⌈H/OS⌉, ⌈W/OS⌉)} (channels rounded to multiples of 8).
    """

    deeplab_versions = (*MobileNetBackbone.deeplab_versions, "lraspp")  # MobileNet v3's Lite R-ASPP

    classifier_prefixes = ("classifier.",)

    def __init__(
        self,
        *,
        output_stride: int = 32,
        num_classes: int | None = None,
        width_mult: float = 1.0,
        dropout: float = 0.2,
        slim_rates: bool = False,
    ) -> None:
        width_mult = check_width_mult(width_mult)
        norm_layer = partial(nn.BatchNorm2d, eps=0.001)
        strides = [2] + [block[4] for block in _BLOCKS]
        plan = plan_stages(strides, output_stride)
        stem = make_divisible(_STEM_WIDTH * width_mult)
        layers: list[nn.Module] = [ConvNormAct(3, stem, 3, stride=2, norm_layer=norm_layer, activation_layer=nn.ReLU)]
        channels = [stem]
        for (fused, kernel, expansion, width, stride, *residual), geometry in zip(_BLOCKS, plan[1:]):
            width = make_divisible(width * width_mult)
            # As MobileNet v2: the block that lost its stride takes the new rate, or the old
            # one with ``slim_rates`` (TF-slim, so imported TF DeepLab weights see their rates).
            layers.append(
                InvertedResidual(
                    channels[-1],
                    width,
                    expanded_channels=channels[-1] * expansion,
                    kernel_size=kernel,
                    stride=geometry.stride,
                    dilation=geometry.first_dilation if slim_rates else geometry.dilation,
                    activation=nn.ReLU,
                    norm_layer=norm_layer,
                    residual=(residual[0] if residual else True) and stride == 1 and channels[-1] == width,
                    fused=fused,
                )
            )
            channels.append(width)
        last = make_divisible(_LAST_WIDTH * max(1.0, width_mult))
        layers.append(ConvNormAct(channels[-1], last, 1, norm_layer=norm_layer, activation_layer=nn.ReLU))
        channels.append(last)
        super().__init__(
            nn.Sequential(*layers),
            taps=level_taps(strides, len(layers) - 1),
            channels=channels,
            output_stride=output_stride,
            classifier=dropout_linear(last, num_classes, dropout),
        )


@register_backbone("mobilenet_edgetpu")
def mobilenet_edgetpu(
    *,
    output_stride: int = 32,
    num_classes: int | None = None,
    width_mult: float = 1.0,
    slim_rates: bool = False,
) -> MobileNetEdgeTPU:
    """MobileNet-EdgeTPU at ``output_stride`` 8/16/32, width multiplier ``width_mult`` (α;
    0.75 is the official DeepLab Cityscapes model's). ``slim_rates`` as in
    :func:`atrous.backbones.mobilenet_v2.mobilenet_v2`."""
    return MobileNetEdgeTPU(
        output_stride=output_stride, num_classes=num_classes, width_mult=width_mult, slim_rates=slim_rates
    )
