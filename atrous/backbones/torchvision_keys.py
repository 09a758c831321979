"""The one documented key map from torchvision ImageNet state_dicts to atrous backbones.

Our backbones name their parameters as torchvision does, so for most families the map
is the identity. What the loader does, for every family:

1. accept a state_dict or the path of a file holding one (loaded with
   ``weights_only=True``); a leading ``module.`` (saved from ``DataParallel`` /
   DDP) is removed from every key;
2. rename keys with the family's ``renames`` (regular expressions, applied in order);
3. drop the family's classifier keys when the backbone was built without a classifier
   (``num_classes=None``), so an ImageNet checkpoint loads into the feature form;
4. load with ``strict`` and turn any mismatch into one ``CheckpointError``.

A backbone names its family in the class attribute ``torchvision_family``; families
without a torchvision counterpart (MobileNet v1, Xception) leave it unset.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from atrous.errors import CheckpointError, choices_message

__all__ = ["KEY_MAPS", "LoadResult", "TorchvisionKeyMap", "convert_state_dict", "load_torchvision_state_dict"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TorchvisionKeyMap:
    """How one torchvision model family's keys become ours.

    ``classifier_prefixes``: key prefixes of the ImageNet classifier (dropped for the
    feature form). ``renames``: ``(pattern, replacement)`` pairs for ``re.sub``,
    applied in order to every key; empty when the names already match.
    """

    classifier_prefixes: tuple[str, ...]
    renames: tuple[tuple[str, str], ...] = ()


# family name (a backbone's ``torchvision_family``) → key map.
KEY_MAPS: dict[str, TorchvisionKeyMap] = {
    # torchvision.models.resnet50 / resnet101: identical names.
    "resnet": TorchvisionKeyMap(classifier_prefixes=("fc.",)),
    # torchvision.models.vgg16: identical names (features.N, classifier.0/3/6).
    "vgg": TorchvisionKeyMap(classifier_prefixes=("classifier.",)),
    # torchvision.models.mobilenet_v2: identical names (features.N.conv.K, classifier.1);
    # the 1×1 → 1280 conv features.18 exists in the classifier form only.
    "mobilenet_v2": TorchvisionKeyMap(classifier_prefixes=("features.18.", "classifier.")),
    # torchvision.models.mobilenet_v3_large / _small: identical names (features.N.block.K).
    "mobilenet_v3": TorchvisionKeyMap(classifier_prefixes=("classifier.",)),
}


def _read(path: str | os.PathLike[str]) -> Mapping[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise CheckpointError(f"pretrained weights file {os.fspath(path)!r} does not exist; check the path")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same message
        raise CheckpointError(
            f"cannot read pretrained weights {os.fspath(path)!r} ({type(error).__name__}: {error}); "
            "expected a torchvision state_dict saved with torch.save"
        ) from error


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor], family: str, *, keep_classifier: bool
) -> dict[str, torch.Tensor]:
    """Rename a torchvision ``family`` state_dict's keys to ours.

    Classifier keys are dropped unless ``keep_classifier``. Raises ``CheckpointError``
    for an unknown family or a mapping whose values are not all tensors.
    """
    if family not in KEY_MAPS:
        raise CheckpointError(choices_message("torchvision family", family, KEY_MAPS))
    key_map = KEY_MAPS[family]
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"not a state_dict: entries {bad[:3]} are not tensors; pass the model's state_dict() "
            "(an atrous training checkpoint loads with atrous.load_model instead)"
        )
    if state_dict and all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module.") :]: v for k, v in state_dict.items()}
    converted = {}
    for key, value in state_dict.items():
        for pattern, replacement in key_map.renames:
            key = re.sub(pattern, replacement, key)
        if not keep_classifier and key.startswith(key_map.classifier_prefixes):
            continue
        converted[key] = value
    return converted


class LoadResult(NamedTuple):
    """Keys of the backbone left at their initial values, and checkpoint keys not used."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _describe(keys: list[str]) -> str:
    shown = ", ".join(keys[:5])
    return shown + (f" (and {len(keys) - 5} more)" if len(keys) > 5 else "")


def load_torchvision_state_dict(
    backbone: nn.Module,
    state_dict: Mapping[str, torch.Tensor] | str | os.PathLike[str],
    *,
    strict: bool = True,
) -> LoadResult:
    """Load torchvision ImageNet weights (a state_dict or a file) into ``backbone``.

    The classifier keys are kept when ``backbone`` has a classifier (built with
    ``num_classes``) and dropped otherwise. With ``strict`` every key must match in
    name and shape, else ``CheckpointError`` lists the differences and nothing is
    loaded. Without it, keys of another shape (e.g. a 1000-class ``fc`` into a
    10-class backbone) are skipped and reported as missing; missing and unexpected
    keys are logged and returned.
    """
    family = getattr(backbone, "torchvision_family", None)
    if family is None:
        raise CheckpointError(
            f"{type(backbone).__name__} has no torchvision counterpart, so torchvision weights cannot be loaded into it"
        )
    if family not in KEY_MAPS:
        raise CheckpointError(choices_message("torchvision family", family, KEY_MAPS))
    if not isinstance(state_dict, Mapping):
        state_dict = _read(state_dict)
    own = backbone.state_dict()
    keep_classifier = any(key.startswith(KEY_MAPS[family].classifier_prefixes) for key in own)
    converted = convert_state_dict(state_dict, family, keep_classifier=keep_classifier)

    wrong_shape = sorted(k for k, v in converted.items() if k in own and own[k].shape != v.shape)
    missing = sorted(k for k in own if k not in converted)
    # Modules such as FrozenBatchNorm2d keep no batch counter: its key is not an error.
    unexpected = sorted(k for k in converted if k not in own and not k.endswith(".num_batches_tracked"))
    if strict and (wrong_shape or missing or unexpected):
        parts = []
        if wrong_shape:
            shapes = ", ".join(f"{k} {tuple(converted[k].shape)} vs {tuple(own[k].shape)}" for k in wrong_shape[:3])
            parts.append(f"shapes differ for {shapes} (for another class count build with num_classes=None)")
        if missing:
            parts.append(f"missing {_describe(missing)}")
        if unexpected:
            parts.append(f"unexpected {_describe(unexpected)}")
        raise CheckpointError(
            f"pretrained weights do not match {type(backbone).__name__} ({family} family): {'; '.join(parts)}; "
            f"pass a torchvision {family} ImageNet state_dict"
        )
    loadable = {k: v for k, v in converted.items() if k in own and k not in wrong_shape}
    backbone.load_state_dict(loadable, strict=False)
    if missing or unexpected or wrong_shape:
        log.warning(
            "loaded torchvision weights partially: %d missing, %d unexpected, %d of another shape",
            len(missing),
            len(unexpected),
            len(wrong_shape),
        )
    return LoadResult(missing + wrong_shape, unexpected)
