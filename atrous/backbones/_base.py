"""The backbone contract every encoder follows.

A backbone is an ``nn.Module`` whose ``forward(x)`` takes an image batch
``(N, 3, H, W)`` (any H, W ≥ ``min_input_size``, odd sizes included) and returns a
dict of feature maps. Every backbone returns at least

- ``"low"``: the OS-4 level (decoder skip of DeepLab v3+), ``(N, C_low, ⌈H/4⌉, ⌈W/4⌉)``
- ``"mid"``: the OS-8 level (LR-ASPP skip), ``(N, C_mid, ⌈H/8⌉, ⌈W/8⌉)``
- ``"out"``: the final level at the requested output stride, ``(N, C_out, ⌈H/OS⌉, ⌈W/OS⌉)``

and declares their channels and strides in ``feature_info`` so heads never hard-code
channel counts. Built with ``num_classes``, a backbone also carries its paper's
ImageNet classifier (names as in torchvision) and ``classify(x) -> (N, num_classes)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from atrous.errors import InputError


@dataclass(frozen=True)
class FeatureInfo:
    """Channels and stride (input size / feature size) of one feature level."""

    channels: int
    stride: int


class Backbone(nn.Module):
    """Base class: holds ``feature_info``, ``output_stride`` and input checks."""

    min_input_size: int = 32
    # Key prefixes of the ImageNet classifier (our names): an ImageNet checkpoint loads into
    # the feature form (built without ``num_classes``) without them.
    classifier_prefixes: tuple[str, ...] = ()
    # The registered name (``resnet50`` …), set by ``atrous.registry.register_backbone``.
    backbone_name: str | None = None
    feature_info: dict[str, FeatureInfo]
    output_stride: int
    # Capabilities, declared on the class so models ask the class instead of its name:
    # the builder takes ``multi_grid`` (unit rates of the last stage's blocks) …
    supports_multi_grid: bool = False
    # … and DeepLab v3/v3+ use these unit rates when the model is given none (v3 §3.2:
    # (1, 2, 4) on ResNet; None: no multi-grid) …
    deeplab_multi_grid: tuple[int, ...] | None = None
    # … and v3+'s ASPP and decoder default to atrous separable convs on it (v3+ §3.2) …
    separable_by_default: bool = False
    # … and the DeepLab versions registered on it as ``{version}_{backbone}`` models
    # (LR-ASPP, MobileNet v3's head, where a MobileNet declares it) …
    deeplab_versions: tuple[str, ...] = ("deeplabv2", "deeplabv3", "deeplabv3plus")
    # … and whether v3's cascade form (copies of the last block, ``cascade_blocks``) exists …
    supports_cascade: bool = False
    # … and whether v2's ASPP branches are v1's fc6–fc8 (LargeFOV) rather than one atrous conv.
    largefov_branches: bool = False

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``InputError`` for a batch that is not (N, 3, H ≥ min, W ≥ min)."""
        if x.dim() != 4:
            raise InputError(f"expected an image batch of shape (N, 3, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != 3:
            raise InputError(
                f"expected 3 input channels (RGB), got {x.shape[1]} in shape {tuple(x.shape)}; "
                "convert grayscale/RGBA images to RGB first"
            )
        h, w = x.shape[-2:]
        if h < self.min_input_size or w < self.min_input_size:
            raise InputError(
                f"input {h}×{w} is smaller than the minimum {self.min_input_size}×{self.min_input_size}; "
                "resize or pad the image"
            )

    def classify(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - overridden
        """ImageNet classifier form: (N, 3, H, W) → (N, num_classes)."""
        raise NotImplementedError(f"{type(self).__name__} was built without a classifier (num_classes=None)")
