"""VGG-16 (Simonyan & Zisserman, ICLR 2015) as DeepLab v1 uses it, and as torchvision ships it.

Parameters have torchvision's names (``features.0`` … ``features.28``, ``classifier.0/3/6``),
so a torchvision ``vgg16`` ImageNet state_dict loads with ``strict=True``: whole into the
classifier form (``num_classes=1000``: features + 7×7 adaptive average pool + fc6/fc7/fc8
as ``Linear``), minus ``classifier.*`` into the feature form. The DeepLab v1 fc6/fc7
(as atrous convs) belong to the LargeFOV head, not here.

Pooling (max-pools have no parameters, so both choices load the same weights):

- ``"deeplab"`` (DeepLab v1/v2 prototxt, the feature form's default): every pool is a
  3×3 window with pad 1; pool1..pool3 keep stride 2, pool4 and pool5 get stride 1 at
  OS 8 (``max_pool(..., stride=1)`` in the prototxt). 3×3/2/pad 1 gives ⌈H/2⌉ for any H
  (Caffe's ceil rounding gives H/2 + 1 for even H; we keep the ⌈H/s⌉ contract instead).
- ``"torchvision"`` (the classifier form's default): 2×2/2 pools, as VGG was trained on
  ImageNet, with ``ceil_mode`` so sizes are ⌈H/2⌉ (identical to torchvision when H and W
  are multiples of 32; otherwise we keep the last row/column torchvision drops).

Output stride: ``plan_stages`` on the strides (1, 2, 2, 2, 2, 2), where stage 0 is
conv1_x and stage k ≥ 1 is pool k followed by the conv block k + 1. A pool whose stride
is removed becomes 3×3/1/pad 1 in both poolings (the only centred, size-keeping max
pool) and is never dilated, as in the prototxt; the convs after it use the stage's rate.
At OS 8 conv5_x has rate 2 (DeepLab v1 §3.1); at OS 16 only pool5 loses its stride.

Features (``forward``), for an input (N, 3, H, W):

- ``"low"``: after pool2, (N, 128, ⌈H/4⌉, ⌈W/4⌉)
- ``"mid"``: after pool3, (N, 256, ⌈H/8⌉, ⌈W/8⌉)
- ``"out"``: conv5_3 after pool5, (N, 512, ⌈H/OS⌉, ⌈W/OS⌉)

With ``pool_levels=True`` also ``"pool1"`` … ``"pool4"``, the output of each of the first
four max-pools (pool2 is "low", pool3 is "mid"): (N, 64 · 2^(k−1) capped at 512,
⌈H/s_k⌉, ⌈W/s_k⌉) with s_k = min(2^k, OS) — the inputs of DeepLab v1's multi-scale features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from atrous.backbones._base import Backbone, FeatureInfo
from atrous.backbones._stride import plan_stages
from atrous.backbones.resnet import check_num_classes
from atrous.errors import ConfigError, choices_message
from atrous.registry import register_backbone

__all__ = ["VGG", "VGG16_LAYERS", "vgg16"]

# Output channels of each 3×3 conv, "M" for a max-pool (torchvision's configuration "D").
VGG16_LAYERS: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip
POOLINGS = ("deeplab", "torchvision")


def _max_pool(pooling: str, stride: int) -> nn.MaxPool2d:
    if stride == 1:
        return nn.MaxPool2d(3, stride=1, padding=1)
    if pooling == "deeplab":
        return nn.MaxPool2d(3, stride=2, padding=1)
    return nn.MaxPool2d(2, stride=2, ceil_mode=True)


class VGG(Backbone):
    """VGG backbone: 3×3 convs + ReLU between max-pools, with an optional ImageNet classifier.

    Args:
        layers: conv widths and "M" for the pools (``VGG16_LAYERS``); the feature levels
            are taken after the 2nd, 3rd and last pool.
        output_stride: 8, 16 or 32.
        num_classes: size of the ImageNet classifier; ``None`` builds the features only.
        pooling: "deeplab" or "torchvision" (see the module docstring).
        pool_levels: also return the outputs of pool1..pool4 as levels ``"pool1"``..``"pool4"``.
    """

    largefov_branches = True  # v2 on VGG-16: each ASPP branch is v1's fc6 → fc7 → fc8

    classifier_prefixes = ("classifier.",)

    def __init__(
        self,
        layers: Sequence[int | str],
        *,
        output_stride: int,
        num_classes: int | None,
        pooling: str,
        pool_levels: bool = False,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(choices_message("pooling", pooling, POOLINGS))
        self.num_classes = check_num_classes(num_classes)
        num_pools = sum(1 for v in layers if v == "M")
        plan = plan_stages([1] + [2] * num_pools, output_stride)

        modules: list[nn.Module] = []
        pools: list[tuple[int, int]] = []  # (index in ``features``, channels) of each pool
        channels, stage = 3, 0
        for value in layers:
            if value == "M":
                stage += 1
                modules.append(_max_pool(pooling, plan[stage].stride))
                pools.append((len(modules) - 1, channels))
            else:
                rate = plan[stage].dilation
                modules += [nn.Conv2d(channels, int(value), 3, padding=rate, dilation=rate), nn.ReLU(inplace=True)]
                channels = int(value)
        self.features = nn.Sequential(*modules)

        # The output of pool k (1-based) has stride plan[k].output_stride.
        levels = {"low": 2, "mid": 3, "out": num_pools}
        if pool_levels:
            levels.update({f"pool{k}": k for k in range(1, 5)})
        self._taps = {name: pools[k - 1][0] for name, k in levels.items()}
        self.feature_info = {name: FeatureInfo(pools[k - 1][1], plan[k].output_stride) for name, k in levels.items()}
        self.output_stride = plan[-1].output_stride

        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(channels * 7 * 7, 4096),
                nn.ReLU(inplace=True),
                nn.Dropout(0.5),
                nn.Linear(4096, 4096),
                nn.ReLU(inplace=True),
                nn.Dropout(0.5),
                nn.Linear(4096, num_classes),
            )
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's initialisation, for training from scratch.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 3, H, W) → {"low", "mid", "out"} (shapes in the module docstring)."""
        self.check_input(x)
        names_at: dict[int, list[str]] = {}
        for name, index in self._taps.items():
            names_at.setdefault(index, []).append(name)
        found: dict[str, torch.Tensor] = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            for name in names_at.get(index, ()):
                found[name] = x
        return found

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet classifier form: (N, 3, H, W) → (N, num_classes) logits."""
        if self.num_classes is None:
            return super().classify(x)
        return self.classifier(torch.flatten(self.avgpool(self(x)["out"]), 1))


@register_backbone("vgg16")
def vgg16(
    *,
    output_stride: int | None = None,
    num_classes: int | None = None,
    pooling: str | None = None,
    pool_levels: bool = False,
) -> VGG:
    """VGG-16: 138.4 M parameters, 15.5 G MAdds at 224×224 (classifier form, torchvision).

    ``None`` picks each form's reference: the feature form is DeepLab v1's (OS 8,
    "deeplab" pooling), the classifier form (``num_classes`` given) is torchvision's
    ImageNet network (OS 32, "torchvision" pooling).
    """
    classifier = num_classes is not None
    return VGG(
        VGG16_LAYERS,
        output_stride=output_stride if output_stride is not None else (32 if classifier else 8),
        num_classes=num_classes,
        pooling=pooling if pooling is not None else ("torchvision" if classifier else "deeplab"),
        pool_levels=pool_levels,
    )
