"""ADE20K, the 150-class SceneParsing benchmark (ADEChallengeData2016).

``root/images/{training,validation}/*.jpg`` with ``root/annotations/{...}/*.png``
(``root`` may also be the folder that contains ``ADEChallengeData2016``). Annotation
value 0 ("other") becomes the ignore index and value v in 1..150 becomes class v - 1.
Display colours are the VOC colour map from entry 1 on, so no class is black (the
benchmark release defines no colours).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
from atrous.data.palette import voc_colormap

# objectInfo150 of the benchmark, first name of each entry, in label order 1..150.
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane",
    "grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant",
    "curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror",
    "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
    "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip
_FOLDERS = {"train": "training", "val": "validation"}


def ade20k_label_map(ignore_index: int = 255) -> np.ndarray:
    """Lookup table (256,) int64: 0 → ignore, v → v - 1 for 1..150, larger values unchanged."""
    table = np.arange(-1, 255, dtype=np.int64)
    table[0] = ignore_index
    table[151:] = np.arange(151, 256)  # left as is so read_mask reports them as invalid
    return table


@register_dataset("ade20k", detect_order=20)
class ADE20K(SegmentationDataset):
    """ADE20K SceneParsing (Zhou et al. 2017): 150 classes, 20,210 train / 2,000 val images."""

    layout = "ADEChallengeData2016/ or images/training/ + annotations/training/"

    @classmethod
    def recognises(cls, root: Path) -> bool:
        splits = tuple((f"images/{s}", f"annotations/{s}") for s in ("training", "validation"))
        return (root / "ADEChallengeData2016").is_dir() or any_split(root, splits)

    splits = tuple(_FOLDERS)

    @classmethod
    def splits_present(cls, root: Path) -> list[str]:
        if (root / "ADEChallengeData2016").is_dir():
            root = root / "ADEChallengeData2016"
        return [s for s, folder in _FOLDERS.items() if (root / "images" / folder).is_dir()]

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
        if (root / "ADEChallengeData2016").is_dir():
            root = root / "ADEChallengeData2016"
        check_split(split, self.splits, "ADE20K")
        fix = "point root (--data) at ADEChallengeData2016/ (holding images/ and annotations/)"
        folder = _FOLDERS[split]
        image_dir = require_dir(root / "images" / folder, "ADE20K image", fix)
        label_dir = require_dir(root / "annotations" / folder, "ADE20K annotation", fix)
        samples = pair_masks(list_images(image_dir), lambda image: label_dir / f"{image.stem}.png")
        super().__init__(
            samples,
            split=split,
            class_names=ADE20K_CLASSES,
            palette=voc_colormap(len(ADE20K_CLASSES) + 1)[1:],
            ignore_index=ignore_index,
            transform=transform,
            label_map=ade20k_label_map(ignore_index),
            max_pixels=max_pixels,
        )
