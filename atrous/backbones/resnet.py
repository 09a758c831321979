"""ResNet-50 and ResNet-101 (He et al., "Deep Residual Learning", CVPR 2016) as DeepLab uses them.

The bottleneck is torchvision's "v1.5" (the stride sits in the 3×3 conv, not the first
1×1) and every parameter has torchvision's name (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer1.0.downsample.0`` … ``fc``), so torchvision ImageNet state_dicts load with
``strict=True``: whole into the classifier form (``num_classes=1000``), minus ``fc.*``
into the feature form.

Output stride (DeepLab v3 §3.1) comes from ``plan_stages`` on the stage strides
(stem 4, layer1 1, layer2..4 2 each): a stage whose stride would pass the OS keeps
stride 1 and dilates its 3×3 convs; its first block keeps the previous rate
(torchvision's ``replace_stride_with_dilation`` convention, so our OS 8 equals
torchvision's ``replace_stride_with_dilation=[False, True, True]``). Multi-grid
(DeepLab v3 §3.2) sets the rates of all three units of layer4 to
``stage rate × multi_grid[i]``: OS 16 with (1, 2, 4) gives 2, 4, 8.

Features (``forward``), for an input (N, 3, H, W):

- ``"low"``: layer1, (N, 256, ⌈H/4⌉, ⌈W/4⌉)
- ``"mid"``: layer2, (N, 512, ⌈H/8⌉, ⌈W/8⌉)
- ``"aux"``: layer3, (N, 1024, ⌈H/s⌉, ⌈W/s⌉) with s = min(16, OS) (torchvision's
  auxiliary classifier input)
- ``"out"``: layer4, (N, 2048, ⌈H/OS⌉, ⌈W/OS⌉)

Cascade (DeepLab v3 §3.2, "going deeper with atrous convolution"): ``cascade_blocks=N``
appends N copies of block4 — ``layer5``, ``layer6`` … (3 bottlenecks of width 512 each,
identity shortcuts) — as further stages of nominal stride 2, so ``plan_stages`` turns
them into rates: at OS 16 block4 has rate 2, block5 4, block6 8, block7 16, and
multi-grid multiplies the unit rates within each (block7 with (1, 2, 4): 16, 32, 64).
``"out"`` is then the last copy's output.

torchvision's paddings (7×7/2 pad 3, max-pool 3/2 pad 1, 3×3/2 pad 1, 1×1/2) all give
exactly ⌈H/2⌉, odd sizes included, so no TF-style fixed padding is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from atrous.backbones._base import Backbone, FeatureInfo
from atrous.backbones._stride import multi_grid_rates, plan_stages
from atrous.errors import ConfigError
from atrous.registry import register_backbone

__all__ = ["Bottleneck", "ResNet", "resnet50", "resnet101"]

NormLayer = Callable[[int], nn.Module]

# Nominal strides of the stem (7×7/2 conv + 3×3/2 max-pool) and of layer1..layer4.
STAGE_STRIDES = (4, 1, 2, 2, 2)
STAGE_WIDTHS = (64, 128, 256, 512)


class Bottleneck(nn.Module):
    """1×1 reduce → 3×3 (stride, rate) → 1×1 expand ×4, plus the shortcut; ReLU after the sum.

    Shapes: (N, in_channels, H, W) → (N, 4·width, ⌈H/stride⌉, ⌈W/stride⌉).
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = norm_layer(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = norm_layer(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = norm_layer(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity  # in place, as torchvision: a fresh (N, 2048, h, w) sum costs a page-faulted allocation
        return self.relu(out)


def check_num_classes(num_classes: int | None) -> int | None:
    """Return ``num_classes`` if it is ``None`` or a positive int, else raise ``ConfigError``."""
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ConfigError(f"num_classes must be a positive integer or None (features only); got {num_classes!r}")
    return num_classes


class ResNet(Backbone):
    """ResNet backbone (bottleneck v1.5) with output stride, multi-grid and an optional classifier.

    Args:
        blocks: number of bottlenecks in layer1..layer4 ((3, 4, 6, 3) for ResNet-50).
        output_stride: 8, 16 or 32.
        num_classes: size of the ImageNet classifier (``avgpool`` + ``fc``); ``None``
            builds the feature extractor only.
        multi_grid: unit rates of layer4's blocks (DeepLab v3), e.g. (1, 2, 4); ``None``
            keeps torchvision's rates. Applied within every cascaded copy too.
        cascade_blocks: copies of layer4 appended in cascade (DeepLab v3 §3.2).
        norm_layer: normalisation after every conv, called with the channel count
            (e.g. ``torchvision.ops.FrozenBatchNorm2d`` for fine-tuning with frozen BN).
    """

    classifier_prefixes = ("fc.",)
    supports_multi_grid = True
    deeplab_multi_grid = (1, 2, 4)  # v3 §3.2 / §4: Multi_Grid (1, 2, 4) in block4
    supports_cascade = True  # v3 §3.2: block5 … as copies of block4

    def __init__(
        self,
        blocks: Sequence[int],
        *,
        output_stride: int = 32,
        num_classes: int | None = None,
        multi_grid: Sequence[int] | None = None,
        cascade_blocks: int = 0,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        if isinstance(cascade_blocks, bool) or not isinstance(cascade_blocks, int) or cascade_blocks < 0:
            raise ConfigError(f"cascade_blocks must be an integer ≥ 0 (copies of block4); got {cascade_blocks!r}")
        widths = STAGE_WIDTHS + (STAGE_WIDTHS[-1],) * cascade_blocks
        blocks = tuple(blocks) + (blocks[-1],) * cascade_blocks
        plan = plan_stages(STAGE_STRIDES + (2,) * cascade_blocks, output_stride)
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

        in_channels = 64
        for index, (width, count, stage) in enumerate(zip(widths, blocks, plan[1:]), start=1):
            if index >= len(STAGE_WIDTHS) and multi_grid is not None:
                rates = multi_grid_rates(stage.dilation, multi_grid, count)
            else:
                rates = [stage.first_dilation] + [stage.dilation] * (count - 1)
            layer = self._make_layer(in_channels, width, stage.stride, rates, norm_layer)
            self.add_module(f"layer{index}", layer)
            in_channels = width * Bottleneck.expansion

        self.output_stride = plan[-1].output_stride
        self.cascade_blocks = cascade_blocks
        self.feature_info = {
            "low": FeatureInfo(256, plan[1].output_stride),
            "mid": FeatureInfo(512, plan[2].output_stride),
            "aux": FeatureInfo(1024, plan[3].output_stride),
            "out": FeatureInfo(2048, plan[-1].output_stride),
        }
        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(in_channels, num_classes)
        self._init_weights()

    @staticmethod
    def _make_layer(
        in_channels: int, width: int, stride: int, rates: Sequence[int], norm_layer: NormLayer
    ) -> nn.Sequential:
        out_channels = width * Bottleneck.expansion
        downsample = None
        if stride != 1 or in_channels != out_channels:
            downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), norm_layer(out_channels)
            )
        layers = [
            Bottleneck(
                in_channels, width, stride=stride, dilation=rates[0], downsample=downsample, norm_layer=norm_layer
            )
        ]
        layers += [Bottleneck(out_channels, width, dilation=rate, norm_layer=norm_layer) for rate in rates[1:]]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        # torchvision's initialisation, for training from scratch.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 3, H, W) → {"low", "mid", "aux", "out"} (shapes in the module docstring)."""
        self.check_input(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer1(x)
        mid = self.layer2(low)
        aux = self.layer3(mid)
        out = self.layer4(aux)
        for index in range(5, 5 + self.cascade_blocks):  # block5, block6 … (cascade)
            out = getattr(self, f"layer{index}")(out)
        return {"low": low, "mid": mid, "aux": aux, "out": out}

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet classifier form: (N, 3, H, W) → (N, num_classes) logits."""
        if self.num_classes is None:
            return super().classify(x)
        return self.fc(torch.flatten(self.avgpool(self(x)["out"]), 1))


@register_backbone("resnet50")
def resnet50(
    *,
    output_stride: int = 32,
    num_classes: int | None = None,
    multi_grid: Sequence[int] | None = None,
    cascade_blocks: int = 0,
    norm_layer: NormLayer = nn.BatchNorm2d,
) -> ResNet:
    """ResNet-50: 25.6 M parameters, 4.1 G MAdds at 224×224 (classifier form, torchvision)."""
    return ResNet(
        (3, 4, 6, 3),
        output_stride=output_stride,
        num_classes=num_classes,
        multi_grid=multi_grid,
        cascade_blocks=cascade_blocks,
        norm_layer=norm_layer,
    )


@register_backbone("resnet101")
def resnet101(
    *,
    output_stride: int = 32,
    num_classes: int | None = None,
    multi_grid: Sequence[int] | None = None,
    cascade_blocks: int = 0,
    norm_layer: NormLayer = nn.BatchNorm2d,
) -> ResNet:
    """ResNet-101 (DeepLab v2/v3's backbone): 44.5 M parameters, 7.8 G MAdds at 224×224."""
    return ResNet(
        (3, 4, 23, 3),
        output_stride=output_stride,
        num_classes=num_classes,
        multi_grid=multi_grid,
        cascade_blocks=cascade_blocks,
        norm_layer=norm_layer,
    )
