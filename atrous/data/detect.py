"""``build_dataset``: one entry point for every dataset, with layout detection."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from atrous.data.base import DATASETS, SegmentationDataset, Transform, detection_order
from atrous.errors import ConfigError, DataError, choices_message

logger = logging.getLogger(__name__)


def detect_layout(root: str | Path) -> str:
    """The dataset name whose on-disk layout ``root`` has; ``DataError`` listing the
    known layouts when none matches."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found; check the path")
    layouts = detection_order()
    for name, cls in layouts:
        if cls.recognises(root):
            return name
    known = "; ".join(f"{name}: {cls.layout}" for name, cls in layouts)
    raise DataError(
        f"{root}: unrecognised dataset layout; known layouts (under the root) are {known}. "
        "Arrange the files like one of them or pass the dataset name"
    )


def dataset_options(name: str) -> list[str]:
    """Keyword options that ``build_dataset(name, ...)`` accepts besides ``transform``."""
    signature = inspect.signature(DATASETS[name].__init__)
    return [p.name for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY and p.name != "transform"]


def classes_counted_from_masks(name: str | None, root: str | Path) -> bool:
    """Whether a dataset at ``root`` (layout ``name``, default detected) counts its classes
    from its masks: a layout that takes ``num_classes`` (a folder) without a classes file.
    Its count is then only the largest mask value + 1, and a model's own count can stand
    in for it (masks of a few images often lack the rarer classes)."""
    from atrous.data.palette import find_class_file

    return "num_classes" in dataset_options(name or detect_layout(root)) and find_class_file(root) is None


# Options of how masks are read that a training run keeps as options of their own.
MASK_OPTIONS = ("num_classes", "ignore_index", "label_map")


def run_dataset_options(train_config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``build_dataset`` options a training run used, from its settings (a
    ``TrainConfig.to_dict()``, as stored in its checkpoints): ``dataset_options`` plus the
    mask options it set (``--num-classes``, ``--ignore-index``, ``--label-map``), so that
    evaluating on the run's data reads the masks as training did."""
    options = dict(train_config.get("dataset_options") or {})
    options.update({name: train_config[name] for name in MASK_OPTIONS if train_config.get(name) is not None})
    return options


def build_dataset(
    name: str | None,
    root: str | Path | None,
    split: str = "train",
    *,
    transform: Transform | None = None,
    **options: Any,
) -> SegmentationDataset:
    """Build a dataset by name (one of ``DATASETS``, the registry ``register_dataset``
    fills) or, with ``name=None``, by the layout found under ``root``. A generated dataset
    (``needs_root = False``, e.g. ``"shapes"``) takes no root.

    Unknown names and options raise ``ConfigError`` listing the valid ones.
    """
    if name is None:
        if root is None:
            raise ConfigError(f"give a dataset name ({', '.join(DATASETS)}) or a root folder to detect it from")
        name = detect_layout(root)
        logger.info("%s: detected the %s layout", root, name)
    if name not in DATASETS:
        raise ConfigError(choices_message("dataset", name, list(DATASETS)))
    valid = dataset_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"dataset {name!r} has no option(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    cls = DATASETS[name]
    if not cls.needs_root:
        if root is not None:
            logger.warning("dataset %r is generated; root %s is not used", name, root)
        return cls(split, transform=transform, **options)
    if root is None:
        raise ConfigError(f"dataset {name!r} needs a root folder")
    return cls(root, split, transform=transform, **options)
