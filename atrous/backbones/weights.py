"""The one loader of ImageNet weights into atrous backbones: torchvision and timm checkpoints.

``load_backbone_weights(backbone, source, *, strict=True)``, where ``source`` is

- a state_dict (a mapping of names to tensors), possibly wrapped as ``{"state_dict": ...}``
  or ``{"model": ...}`` (training checkpoints of timm and of torchvision's references);
- the path of a file holding one: a ``torch.save`` file (read with ``weights_only=True``)
  or a ``.safetensors`` file (needs the ``safetensors`` package);
- ``"imagenet"`` or ``True``: the backbone's published ImageNet file, if a copy is already
  in torch.hub's cache (``torch.hub.get_dir()/checkpoints``, under its published name) or,
  for timm weights, in the Hugging Face cache. Nothing is ever downloaded: the error for a
  missing file names the files that fit, where to get them and the folder to put them in.

The layout is recognised by the keys: every source whose key map covers the backbone
(``torchvision_keys``, ``timm_keys``) renames the checkpoint to our names, and the
rename that matches the backbone best is used. A leading ``module.`` (DataParallel /
DDP) is removed first. Classifier keys (the backbone's ``classifier_prefixes``) are
dropped when the backbone was built without a classifier (``num_classes=None``), so
an ImageNet checkpoint loads into the feature form DeepLab uses.

Strict (the default): every key of the checkpoint is used and every key of the backbone
is set, with equal shapes, else one ``CheckpointError`` lists the differences and
nothing is loaded. BatchNorm batch counters (``num_batches_tracked``) are not weights:
their absence on either side is no error.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from atrous.backbones import timm_keys, torchvision_keys
from atrous.backbones._published import PublishedFile, hub_checkpoints_dir
from atrous.errors import CheckpointError
from atrous.files import check_torch_file

__all__ = ["IMAGENET", "LoadResult", "find_imagenet_weights", "load_backbone_weights", "read_state_dict"]

log = logging.getLogger(__name__)

IMAGENET = "imagenet"
WeightsSource = Mapping[str, Any] | str | os.PathLike | bool
_SOURCES = (torchvision_keys, timm_keys)  # preferred first when two renames match equally well
_COUNTER = ".num_batches_tracked"
_SHOWN = 5  # keys listed per kind of difference


class LoadResult(NamedTuple):
    """Keys of the backbone left at their initial values, and checkpoint keys not used."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class _Diff(NamedTuple):
    missing: list[str]
    unexpected: list[str]
    wrong_shape: list[str]

    def count(self) -> int:
        return len(self.missing) + len(self.unexpected) + len(self.wrong_shape)


def published_files(backbone: nn.Module) -> list[PublishedFile]:
    """The published ImageNet files that fit ``backbone`` (by its registered name), preferred first."""
    name = getattr(backbone, "backbone_name", None)
    return [file for source in _SOURCES for file in source.published_files(name)]


def _where_to_get(backbone: nn.Module) -> str:
    files = published_files(backbone)
    folder = hub_checkpoints_dir()
    if not files:
        return f"no published ImageNet file is known for {type(backbone).__name__}; pass a state_dict or its path"
    shown = "; ".join(f"{file.name} ({file.source}, {file.url})" for file in files[:4])
    return f"save one of {shown} in {folder} (found there without a path, as pretrained_backbone='imagenet'), or pass its path"


def find_imagenet_weights(backbone: nn.Module) -> Path:
    """The first published ImageNet file for ``backbone`` already on this machine.

    Raises ``CheckpointError`` naming the files and the folder to put one in when none is.
    """
    for file in published_files(backbone):
        copies = file.cached_copies()
        if copies:
            return copies[0]
    raise CheckpointError(
        f"no ImageNet weights for {getattr(backbone, 'backbone_name', None) or type(backbone).__name__} "
        f"in {hub_checkpoints_dir()}; {_where_to_get(backbone)}"
    )


def read_state_dict(path: str | os.PathLike[str], backbone: nn.Module | None = None) -> dict[str, Any]:
    """Read a weights file: ``.safetensors``, else ``torch.load(weights_only=True)``.

    A missing file's error names the published files that fit ``backbone``.
    """
    path = Path(path)
    if not path.is_file():
        hint = _where_to_get(backbone) if backbone is not None else "check the path"
        raise CheckpointError(f"pretrained weights file {os.fspath(path)!r} does not exist; {hint}")
    check_torch_file(path, f"pretrained weights {os.fspath(path)!r}", CheckpointError)
    try:
        if path.suffix == ".safetensors":
            try:
                from safetensors.torch import load_file
            except ImportError:
                raise CheckpointError(
                    f"reading {path} needs the safetensors package: pip install safetensors"
                ) from None
            return load_file(path, device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same message
        raise CheckpointError(
            f"cannot read pretrained weights {os.fspath(path)!r} ({type(error).__name__}: {error}); "
            "expected a torchvision or timm state_dict (torch.save or .safetensors)"
        ) from error


def _unwrap(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The state_dict inside ``checkpoint``, checked to hold tensors, without ``module.``."""
    if checkpoint.get("format") == "atrous-checkpoint":
        raise CheckpointError(
            "this is an atrous checkpoint (a whole model): load it with atrous.load_model or train with --pretrained"
        )
    for wrapper in ("state_dict", "model"):
        if isinstance(checkpoint.get(wrapper), Mapping):
            checkpoint = checkpoint[wrapper]
            break
    bad = [k for k, v in checkpoint.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"not a state_dict: entries {bad[:3]} are not tensors; pass the model's state_dict() "
            "(an atrous training checkpoint loads with atrous.load_model instead)"
        )
    if checkpoint and all(k.startswith("module.") for k in checkpoint):
        return {k[len("module.") :]: v for k, v in checkpoint.items()}
    return dict(checkpoint)


def _diff(converted: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> _Diff:
    return _Diff(
        missing=sorted(k for k in own if k not in converted and not k.endswith(_COUNTER)),
        unexpected=sorted(k for k in converted if k not in own and not k.endswith(_COUNTER)),
        wrong_shape=sorted(k for k, v in converted.items() if k in own and own[k].shape != v.shape),
    )


def _convert(
    state_dict: dict[str, torch.Tensor], backbone: nn.Module, own: Mapping[str, torch.Tensor]
) -> tuple[str, dict[str, torch.Tensor], _Diff]:
    """(source name, checkpoint in our names, differences) for the best-matching source."""
    prefixes = getattr(backbone, "classifier_prefixes", ())
    keep_classifier = any(key.startswith(prefixes) for key in own) or not prefixes
    best: tuple[str, dict[str, torch.Tensor], _Diff] | None = None
    for source in _SOURCES:
        converted = source.convert(state_dict, backbone)
        if converted is None:
            continue
        if not keep_classifier:
            converted = {k: v for k, v in converted.items() if not k.startswith(prefixes)}
        diff = _diff(converted, own)
        if best is None or diff.count() < best[2].count():
            best = (source.SOURCE, converted, diff)
    if best is None:
        raise CheckpointError(f"{type(backbone).__name__} has no key map for ImageNet weights (torchvision or timm)")
    return best


def _describe(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f" (and {len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


def _mismatch_message(backbone: nn.Module, source: str, converted: Mapping[str, torch.Tensor], diff: _Diff) -> str:
    own = backbone.state_dict()
    parts = []
    if diff.wrong_shape:
        shapes = ", ".join(f"{k} {tuple(converted[k].shape)} vs {tuple(own[k].shape)}" for k in diff.wrong_shape[:3])
        more = f" (and {len(diff.wrong_shape) - 3} more)" if len(diff.wrong_shape) > 3 else ""
        classifier = any(k.startswith(getattr(backbone, "classifier_prefixes", ())) for k in diff.wrong_shape)
        hint = " (for another class count build with num_classes=None)" if classifier else ""
        parts.append(f"shapes differ for {shapes}{more}{hint}")
    if diff.missing:
        parts.append(f"missing {_describe(diff.missing)}")
    if diff.unexpected:
        parts.append(f"unexpected {_describe(diff.unexpected)}")
    name = getattr(backbone, "backbone_name", None) or type(backbone).__name__
    return (
        f"pretrained weights do not match {type(backbone).__name__} ({name}), read in {source}'s layout: "
        f"{'; '.join(parts)}; pass a torchvision or timm ImageNet state_dict of {name}"
    )


def load_backbone_weights(backbone: nn.Module, source: WeightsSource, *, strict: bool = True) -> LoadResult:
    """Load torchvision or timm ImageNet weights into ``backbone`` (see the module docstring).

    ``source``: a state_dict (or ``{"state_dict"|"model": state_dict}``), a file path,
    or ``"imagenet"`` / ``True`` for the published file already in the local caches.
    With ``strict`` (the default) any difference in keys or shapes raises one
    ``CheckpointError`` listing them and nothing is loaded. Without it, keys of another
    shape (e.g. a 1000-class classifier into a 10-class backbone) are skipped and
    reported as missing; missing and unexpected keys are logged and returned.
    """
    if source is True or (isinstance(source, str) and source == IMAGENET):
        source = find_imagenet_weights(backbone)
    if isinstance(source, bool):
        raise CheckpointError(f"pretrained weights must be a state_dict, a path or {IMAGENET!r}; got {source!r}")
    origin = "state_dict"
    if not isinstance(source, Mapping):
        origin = os.fspath(source)
        source = read_state_dict(source, backbone)
    own = backbone.state_dict()
    layout, converted, diff = _convert(_unwrap(source), backbone, own)
    if strict and diff.count():
        raise CheckpointError(_mismatch_message(backbone, layout, converted, diff))
    loadable = {k: v for k, v in converted.items() if k in own and k not in diff.wrong_shape}
    backbone.load_state_dict(loadable, strict=False)
    if diff.count():
        log.warning(
            "loaded %s weights partially: %d missing, %d unexpected, %d of another shape",
            layout,
            len(diff.missing),
            len(diff.unexpected),
            len(diff.wrong_shape),
        )
    log.info("loaded ImageNet weights (%s layout) from %s into %s", layout, origin, type(backbone).__name__)
    return LoadResult(diff.missing + diff.wrong_shape, diff.unexpected)
