"""torchvision ImageNet checkpoints: which backbones take them, and their published files.

Our ResNet-50/101, VGG-16 and MobileNet v2/v3 name every parameter as torchvision's
``resnet50``, ``resnet101``, ``vgg16``, ``mobilenet_v2``, ``mobilenet_v3_large`` and
``mobilenet_v3_small`` do (the same model names), so the key map is the identity: a
torchvision state_dict loads with ``strict=True`` into the classifier form
(``num_classes=1000``), and minus the classifier (``classifier_prefixes`` of the
backbone) into the feature form. timm's ``resnet50`` / ``resnet101`` share these names.
MobileNet v1 and Xception have no torchvision counterpart (see ``timm_keys``).

The loader is ``atrous.backbones.weights.load_backbone_weights``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from atrous.backbones._published import PublishedFile
from atrous.backbones.mobilenet_v2 import MobileNetV2
from atrous.backbones.mobilenet_v3 import MobileNetV3
from atrous.backbones.resnet import ResNet
from atrous.backbones.vgg import VGG

__all__ = ["FAMILIES", "convert", "published_files"]

SOURCE = "torchvision"
# Our backbone classes whose parameter names are torchvision's: a backbone registered on
# one of them, under a torchvision model name, has torchvision's ImageNet files.
FAMILIES: tuple[type[nn.Module], ...] = (ResNet, VGG, MobileNetV2, MobileNetV3)


def convert(state_dict: Mapping[str, torch.Tensor], backbone: nn.Module) -> dict[str, torch.Tensor] | None:
    """``state_dict`` in our names (unchanged: they are torchvision's), or ``None`` when
    ``backbone`` has no torchvision counterpart."""
    return dict(state_dict) if isinstance(backbone, FAMILIES) else None


def published_files(backbone_name: str | None) -> list[PublishedFile]:
    """torchvision's ImageNet files for ``backbone_name`` (V1 first: torchvision's own
    segmentation models start from it), read from torchvision's weight enums."""
    from torchvision.models import get_model_weights, list_models

    from atrous.registry import backbone_class, list_backbones

    if backbone_name not in list_backbones() or backbone_name not in list_models():
        return []
    if not issubclass(backbone_class(backbone_name), FAMILIES):
        return []

    return [
        PublishedFile(weights.url.rsplit("/", 1)[-1], weights.url, SOURCE)
        for weights in get_model_weights(backbone_name)
        if weights.name.startswith("IMAGENET1K_V")
    ]
