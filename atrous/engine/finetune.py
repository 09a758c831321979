"""Fine-tuning defaults: the options ``--pretrained CHECKPOINT`` sets when the user leaves them unset.

Starting from a trained atrous model (a shipped name such as ``camvid`` or a ``.pt``),
the paper's from-scratch settings (SGD at lr 0.007, BN statistics updated, random scale
0.5–2.0) undo much of what the weights know. The values below are what the shipped
CamVid fine-tune recipes measured (``camvid_deeplabv3_mobilenet_edgetpu_cityscapes``
and its two later phases, ``camvid_deeplabv3_mobilenet_v2_voc``): AdamW at 3e-4 with
decoupled decay 0.01 and a short warmup, frozen BN (small batches; imported models have
it folded), OHEM (bootstrapped cross-entropy on the hardest 25 % of pixels, +7.3 mIoU
over median-frequency weights on CamVid), a moving average of the weights, a milder scale
range, whole frames as crops, and a 10× learning rate for a head that starts fresh.
ImageNet backbone weights keep the paper's settings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any

from atrous.engine.config import TrainConfig

FINETUNE_DEFAULTS: dict[str, Any] = {
    "optimizer": "adamw",
    "lr": 0.0003,
    "weight_decay": 0.01,
    "warmup_iters": 20,
    "freeze_bn": True,
    "loss": "bootstrap",
    "bootstrap_ratio": 0.25,
    "ema": 0.995,
    "scale_range": (0.75, 1.75),
}
NEW_HEAD_LR_MULT = 10.0  # the VOC → CamVid recipe's, for its new classifier
MAX_CROP = 513  # whole frames up to this size; larger images are cropped to it
_SIZE_SAMPLE = 64  # images whose size decides the crop


def finetune_defaults(
    config: TrainConfig, unset: Collection[str], pretrained: dict[str, Any], train_set: Any
) -> dict[str, Any]:
    """The fine-tuning values for the fields in ``unset`` (those the user did not give).

    ``pretrained`` is the atrous checkpoint being fine-tuned, ``train_set`` the training
    dataset (its class count and, for a dataset of files, its image sizes).
    """
    chosen = {name: value for name, value in FINETUNE_DEFAULTS.items() if name in unset}
    if "crop_size" in unset:
        crop = _whole_frames(train_set)
        if crop is not None:
            chosen["crop_size"] = crop
    if "head_lr_mult" in unset and _head_starts_fresh(config, pretrained, train_set.num_classes):
        chosen["head_lr_mult"] = NEW_HEAD_LR_MULT
    return chosen


def with_defaults(config: TrainConfig, chosen: dict[str, Any]) -> TrainConfig:
    """``config`` with the ``chosen`` values (checked as any config is)."""
    return dataclasses.replace(config, **chosen)


def describe_defaults(chosen: dict[str, Any]) -> str:
    """'optimizer adamw, lr 0.0003, …' for the log."""

    def text(value: Any) -> str:
        if isinstance(value, (tuple, list)):
            return "×".join(map(str, value)) if all(isinstance(v, int) for v in value) else "–".join(map(str, value))
        return str(value).lower() if isinstance(value, bool) else str(value)

    return ", ".join(f"{name} {text(value)}" for name, value in chosen.items())


def _whole_frames(train_set: Any) -> tuple[int, int] | None:
    """[height, width] covering the largest of the first training images, each side at most
    ``MAX_CROP``; None for a dataset without image files."""
    from atrous.data.io import image_size

    samples = getattr(train_set, "samples", None)
    if not samples:
        return None
    sizes = [image_size(image) for image, _ in list(samples)[:_SIZE_SAMPLE]]
    height, width = (min(MAX_CROP, max(size[axis] for size in sizes)) for axis in (0, 1))
    return height, width


def _head_starts_fresh(config: TrainConfig, pretrained: dict[str, Any], num_classes: int) -> bool:
    """Whether part of the head is not loaded: another model's head, or a classifier of
    another class count without a class map to start its rows."""
    saved = pretrained["model"]["config"]
    if config.model is not None and config.model != saved.get("name"):
        return True
    return saved.get("num_classes") != num_classes and config.pretrained_class_map is None


def class_count_note(pretrained: dict[str, Any], num_classes: int) -> str | None:
    """A warning when the data's class count differs from the pretrained model's (its
    classifier then starts afresh); one more class often is an "unlabelled" mask value."""
    saved = pretrained["model"]["config"].get("num_classes")
    if saved is None or saved == num_classes:
        return None
    unlabelled = num_classes - 1
    hint = (
        f"; if mask value {unlabelled} marks unlabelled pixels, pass --ignore-index {unlabelled}"
        if num_classes == saved + 1
        else ""
    )
    return f"the data has {num_classes} classes, the pretrained model {saved}: its classifier starts afresh{hint}"
