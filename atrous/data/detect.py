"""``build_dataset``: one entry point for every dataset, with layout detection."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

from atrous.data.ade20k import ADE20K
from atrous.data.base import SegmentationDataset, Transform
from atrous.data.camvid import CamVid
from atrous.data.cityscapes import Cityscapes
from atrous.data.folder import FolderDataset
from atrous.data.shapes import ShapesDataset
from atrous.data.voc import VOCSegmentation, find_voc2012
from atrous.errors import ConfigError, DataError, choices_message

logger = logging.getLogger(__name__)

DATASETS: dict[str, type[SegmentationDataset]] = {
    "folder": FolderDataset,
    "camvid": CamVid,
    "voc": VOCSegmentation,
    "cityscapes": Cityscapes,
    "ade20k": ADE20K,
    "shapes": ShapesDataset,
}

def _any_split(root: Path, pairs: tuple[tuple[str, str], ...]) -> bool:
    """Whether ``root`` holds the (images, labels) folder pair of at least one split."""
    return any((root / images).is_dir() and (root / labels).is_dir() for images, labels in pairs)


# (name, what the layout looks like, test on the root), checked in this order. A layout
# is recognised from any one of its splits (e.g. only CamVid's val/ + valannot/).
_LAYOUTS = (
    ("cityscapes", "leftImg8bit/ + gtFine/", lambda r: (r / "leftImg8bit").is_dir() and (r / "gtFine").is_dir()),
    (
        "ade20k",
        "ADEChallengeData2016/ or images/training/ + annotations/training/",
        lambda r: (r / "ADEChallengeData2016").is_dir()
        or _any_split(r, tuple((f"images/{s}", f"annotations/{s}") for s in ("training", "validation"))),
    ),
    ("voc", "VOCdevkit/VOC2012/ (JPEGImages/, SegmentationClass/)", lambda r: find_voc2012(r) is not None),
    (
        "camvid",
        "train/ + trainannot/ (or val/ + valannot/, test/ + testannot/)",
        lambda r: _any_split(r, tuple((s, f"{s}annot") for s in ("train", "val", "test"))),
    ),
    ("folder", "images/ + masks/", lambda r: (r / "images").is_dir() and (r / "masks").is_dir()),
)


def detect_layout(root: str | Path) -> str:
    """The dataset name whose on-disk layout ``root`` has; ``DataError`` listing the
    known layouts when none matches."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found; check the path")
    for name, _, matches in _LAYOUTS:
        if matches(root):
            return name
    known = "; ".join(f"{name}: {layout}" for name, layout, _ in _LAYOUTS)
    raise DataError(
        f"{root}: unrecognised dataset layout; known layouts (under the root) are {known}. "
        "Arrange the files like one of them or pass the dataset name"
    )


def dataset_options(name: str) -> list[str]:
    """Keyword options that ``build_dataset(name, ...)`` accepts besides ``transform``."""
    signature = inspect.signature(DATASETS[name].__init__)
    return [p.name for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY and p.name != "transform"]


def build_dataset(
    name: str | None,
    root: str | Path | None,
    split: str = "train",
    *,
    transform: Transform | None = None,
    **options: Any,
) -> SegmentationDataset:
    """Build a dataset by name (one of ``DATASETS``) or, with ``name=None``, by the layout
    found under ``root``. ``"shapes"`` is generated and needs no root.

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
    if name == "shapes":
        if root is not None:
            logger.warning("dataset 'shapes' is generated; root %s is not used", root)
        return cls(split, transform=transform, **options)
    if root is None:
        raise ConfigError(f"dataset {name!r} needs a root folder")
    return cls(root, split, transform=transform, **options)
