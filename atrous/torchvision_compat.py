"""torchvision's segmentation models as atrous configurations, and their weights.

torchvision ships three DeepLab-family models; each is one atrous configuration:

=================================  ==================================================
torchvision                        atrous
=================================  ==================================================
``deeplabv3_resnet50/101``         ``deeplabv3_resnet50/101``, OS 8, no multi-grid,
                                   ASPP 12/24/36, ``refine_conv=True`` (its extra 3×3)
``deeplabv3_mobilenet_v3_large``   same name, OS 16, ASPP 12/24/36, ``refine_conv=True``
``lraspp_mobilenet_v3_large``      same name, OS 16
=================================  ==================================================

Key map: ``classifier.`` → ``head.``, ``aux_classifier.`` → ``aux_head.``; a MobileNet
backbone's ``backbone.N.`` → ``backbone.features.N.`` (torchvision keeps only the
``features`` Sequential). Everything else is named alike.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from atrous.deeplab import DeepLab
from atrous.errors import ConfigError, choices_message
from atrous.models import create_model

TORCHVISION_EQUIVALENTS: dict[str, dict[str, Any]] = {
    "deeplabv3_resnet50": {"output_stride": 8, "multi_grid": None, "refine_conv": True, "dropout": 0.5},
    "deeplabv3_resnet101": {"output_stride": 8, "multi_grid": None, "refine_conv": True, "dropout": 0.5},
    "deeplabv3_mobilenet_v3_large": {
        "output_stride": 16,
        "aspp_rates": (12, 24, 36),
        "refine_conv": True,
        "dropout": 0.5,
    },
    "lraspp_mobilenet_v3_large": {"output_stride": 16},
}

_RENAMES = (
    (r"^classifier\.", "head."),
    (r"^aux_classifier\.", "aux_head."),
)
_MOBILENET_BACKBONE = (r"^backbone\.(\d+)\.", r"backbone.features.\1.")


def torchvision_equivalent(name: str, *, num_classes: int = 21, aux_loss: bool = False) -> DeepLab:
    """The atrous model computing exactly what torchvision's model ``name`` computes."""
    if name not in TORCHVISION_EQUIVALENTS:
        raise ConfigError(choices_message("torchvision segmentation model", name, TORCHVISION_EQUIVALENTS))
    return create_model(name, num_classes=num_classes, aux_loss=aux_loss, **TORCHVISION_EQUIVALENTS[name])


def convert_torchvision_segmentation(state_dict: Mapping[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """Rename the keys of a torchvision segmentation ``state_dict`` of model ``name`` to ours."""
    renames = list(_RENAMES)
    if "mobilenet" in name:
        renames.append(_MOBILENET_BACKBONE)
    converted = {}
    for key, value in state_dict.items():
        for pattern, replacement in renames:
            key = re.sub(pattern, replacement, key)
        converted[key] = value
    return converted


def load_torchvision_segmentation(state_dict: Mapping[str, torch.Tensor], name: str, *, num_classes: int) -> DeepLab:
    """Build ``torchvision_equivalent(name)`` and load torchvision's weights strictly."""
    aux = any(k.startswith("aux_classifier.") for k in state_dict)
    model = torchvision_equivalent(name, num_classes=num_classes, aux_loss=aux)
    model.load_state_dict(convert_torchvision_segmentation(state_dict, name), strict=True)
    return model
