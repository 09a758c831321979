"""Cityscapes fine annotations, the 19 evaluation classes.

``root/leftImg8bit/{split}/{city}/*_leftImg8bit.png`` with
``root/gtFine/{split}/{city}/*_gtFine_labelIds.png``. The 34 labelIds are mapped to the
19 trainIds of the official ``labels.py``; every other id becomes the ignore index.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from atrous.data.base import (
    SegmentationDataset,
    Transform,
    check_split,
    list_images,
    pair_masks,
    register_dataset,
    require_dir,
)
from atrous.data.io import DEFAULT_MAX_PIXELS
from atrous.errors import DataError

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip
CITYSCAPES_PALETTE = [
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
]  # fmt: skip
# labelId of each trainId 0..18, from cityscapesScripts labels.py.
CITYSCAPES_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)


def label_id_to_train_id(ignore_index: int = 255) -> np.ndarray:
    """Lookup table (256,) int64: labelId → trainId, everything else → ``ignore_index``."""
    table = np.full(256, ignore_index, dtype=np.int64)
    table[list(CITYSCAPES_LABEL_IDS)] = np.arange(len(CITYSCAPES_LABEL_IDS))
    return table


@register_dataset("cityscapes", detect_order=10)
class Cityscapes(SegmentationDataset):
    """Cityscapes (Cordts et al. 2016), gtFine, 19 classes; test labels are all ignore."""

    layout = "leftImg8bit/ + gtFine/"

    @classmethod
    def recognises(cls, root: Path) -> bool:
        return (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir()

    splits = ("train", "val", "test")

    @classmethod
    def splits_present(cls, root: Path) -> list[str]:
        return [s for s in cls.splits if (root / "leftImg8bit" / s).is_dir() or (root / "gtFine" / s).is_dir()]

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        transform: Transform | None = None,
        ignore_index: int = 255,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        root = Path(root)
        check_split(split, self.splits, "Cityscapes")
        fix = "point root (--data) at the folder holding leftImg8bit/ and gtFine/"
        image_dir = require_dir(root / "leftImg8bit" / split, "Cityscapes image", fix)
        label_dir = require_dir(root / "gtFine" / split, "Cityscapes label", fix)
        images = [p for p in list_images(image_dir, (".png",), recursive=True) if p.stem.endswith("_leftImg8bit")]
        if not images:
            raise DataError(f"{image_dir}: no *_leftImg8bit.png images in its city folders; {fix}")

        def mask_for(image: Path) -> Path:
            stem = image.stem[: -len("_leftImg8bit")]
            return label_dir / image.parent.name / f"{stem}_gtFine_labelIds.png"

        super().__init__(
            pair_masks(images, mask_for),
            split=split,
            class_names=CITYSCAPES_CLASSES,
            palette=CITYSCAPES_PALETTE,
            ignore_index=ignore_index,
            transform=transform,
            label_map=label_id_to_train_id(ignore_index),
            max_pixels=max_pixels,
        )
