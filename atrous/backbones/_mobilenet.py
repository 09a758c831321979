"""What MobileNet v1, v2 and v3 share: a ``features`` sequence tapped at three depths.

Each MobileNet is ``features`` (an ``nn.Sequential``: stem, blocks, and the final 1×1
conv of v3 and of v2's classifier form) and, when built with ``num_classes``, a
``classifier`` (after ``avgpool``) applied to the global
average of the last feature map, with torchvision's module names. The segmentation
forward runs ``features`` up to the "out" tap and returns the "low", "mid" and "out"
levels; ``classify`` runs every layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from atrous.backbones._base import Backbone, FeatureInfo
from atrous.errors import ConfigError


def check_width_mult(width_mult: float) -> float:
    """Return ``width_mult`` (the width multiplier α) if it is a positive number."""
    if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or not width_mult > 0:
        raise ConfigError(f"width_mult must be a positive number (e.g. 1.0, 0.75, 0.5); got {width_mult!r}")
    return float(width_mult)


def layers_at_stride(strides: Sequence[int], stride: int) -> list[int]:
    """Indices of the layers whose output has nominal (OS 32) stride ``stride``.

    >>> layers_at_stride([2, 1, 2, 1, 2], 4)
    [2, 3]
    """
    indices, running = [], 1
    for index, layer_stride in enumerate(strides):
        running *= layer_stride
        if running == stride:
            indices.append(index)
    return indices


def level_taps(strides: Sequence[int], out: int, *, first: bool = False) -> dict[str, int]:
    """Which layers are the "low" (OS 4) and "mid" (OS 8) levels — the last layer at that
    stride (TF-slim, torchvision's MobileNetV2), or the first with ``first`` (torchvision's
    MobileNetV3 segmentation models) — and "out" (``out``)."""
    pick = 0 if first else -1
    return {"low": layers_at_stride(strides, 4)[pick], "mid": layers_at_stride(strides, 8)[pick], "out": out}


def dropout_linear(width: int, num_classes: int | None, dropout: float) -> nn.Sequential | None:
    """The classifier of MobileNet v1, v2 and EdgeTPU (``classifier.0`` dropout, ``classifier.1``
    Linear, torchvision's names), or None without ``num_classes``."""
    return None if num_classes is None else nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_classes))


class MobileNetBackbone(Backbone):
    """A ``features`` sequence with feature taps and an optional ImageNet classifier.

    Args:
        features: the layers, stem first.
        taps: index in ``features`` of the layer whose output is each of "low" (OS 4),
            "mid" (OS 8) and "out" (the final level).
        channels: output channels of each layer of ``features``.
        output_stride: stride of the "out" level (8, 16 or 32).
        classifier: applied to the (N, C) global average of ``features``' output, or
            ``None`` for a backbone without classifier.
    """

    separable_by_default = True  # depthwise-separable through and through: v3+'s ASPP/decoder follow

    def __init__(
        self,
        features: nn.Sequential,
        *,
        taps: dict[str, int],
        channels: Sequence[int],
        output_stride: int,
        classifier: nn.Module | None,
    ) -> None:
        super().__init__()
        self.features = features
        if classifier is not None:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = classifier
        self.output_stride = output_stride
        strides = {"low": 4, "mid": 8, "out": output_stride}
        self.feature_info = {name: FeatureInfo(channels[index], strides[name]) for name, index in taps.items()}
        self._taps = dict(taps)
        self._tap_names: dict[int, list[str]] = {}
        for name, index in taps.items():
            self._tap_names.setdefault(index, []).append(name)
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's MobileNet initialisation, so an untrained model starts where theirs does.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 3, H, W) → {"low": (N, C, ⌈H/4⌉, ⌈W/4⌉), "mid": ⌈/8⌉, "out": ⌈/OS⌉}."""
        self.check_input(x)
        found: dict[str, torch.Tensor] = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            for name in self._tap_names.get(index, ()):
                found[name] = x
            if index == self._taps["out"]:
                break
        return {name: found[name] for name in ("low", "mid", "out")}

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet classifier form: (N, 3, H, W) → (N, num_classes) logits."""
        if not hasattr(self, "classifier"):
            return super().classify(x)
        self.check_input(x)
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
