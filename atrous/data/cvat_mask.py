"""CVAT's "Segmentation mask 1.1" export: colour-coded masks and the colour of each label.

::

    root/labelmap.txt                              # label:color_rgb:parts:actions
    root/JPEGImages/NAME.{jpg,png,…}               the images (exported with "Save images")
    root/SegmentationClass/NAME.png                a colour per label
    root/ImageSets/Segmentation/<subset>.txt       image names per subset (default.txt without subsets)

``labelmap.txt`` lines are ``name:r,g,b:parts:actions``; the class index is the line's
order (CVAT writes ``background:0,0,0::`` first, the pixels no shape covers). Each mask
pixel's colour is looked up in that table, whatever mode the PNG has; a colour the table
lacks is one ``DataError`` naming the colour (RGB), the mask and the first pixel (x, y)
with it. Instance masks (``SegmentationObject/``) are not read.

Splits: each list ``ImageSets/Segmentation/<subset>.txt`` is the split ``<subset>``; a
dataset with one list (or none: every image) also has ``"all"`` and ``"train"``/``"val"``:
a fixed random partition of it (``val_fraction``, seed 0), the same in every run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from atrous.data.base import (
    SegmentationDataset,
    Transform,
    auto_split,
    images_by_stem,
    list_images,
    pair_masks,
    read_split_file,
    register_dataset,
    require_dir,
)
from atrous.data.io import DEFAULT_MAX_PIXELS, read_color_mask
from atrous.data.palette import ClassSpec, Color, check_unique_names
from atrous.errors import ConfigError, DataError, choices_message

LABELMAP = "labelmap.txt"
_LISTS = Path("ImageSets") / "Segmentation"


def parse_labelmap(path: Path) -> ClassSpec:
    """Class names and colours (in line order) of a CVAT / datumaro ``labelmap.txt``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the label map ({error})") from None
    names: list[str] = []
    colors: list[Color] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split(":")
        color = _rgb(fields[1] if len(fields) > 1 else "")
        if len(fields) < 2 or color is None:
            raise DataError(
                f"{path} line {number}: {line.strip()!r} is not 'name:r,g,b:parts:actions' (e.g. car:255,0,0::)"
            )
        names.append(fields[0].strip())
        colors.append(color)
    if not names:
        raise DataError(f"{path}: lists no labels; export the task again as Segmentation mask 1.1")
    check_unique_names(names, str(path))
    return ClassSpec(names, colors)


def _rgb(text: str) -> Color | None:
    parts = text.split(",")
    if len(parts) != 3 or not all(part.strip().isdigit() for part in parts):
        return None
    rgb = tuple(int(part) for part in parts)
    return rgb if all(v <= 255 for v in rgb) else None  # type: ignore[return-value]


def split_lists(root: Path) -> dict[str, Path]:
    """Subset name → its list file under ``ImageSets/Segmentation/``."""
    folder = root / _LISTS
    return {p.stem: p for p in sorted(folder.glob("*.txt")) if p.is_file()} if folder.is_dir() else {}


@register_dataset("cvat-mask", detect_order=25)
class CvatMaskDataset(SegmentationDataset):
    """CVAT "Segmentation mask 1.1": colour masks and ``labelmap.txt``; see the module docstring."""

    layout = "labelmap.txt + SegmentationClass/ + JPEGImages/ (CVAT Segmentation mask 1.1)"

    @classmethod
    def recognises(cls, root: Path) -> bool:
        return (root / LABELMAP).is_file() and (root / "SegmentationClass").is_dir()

    @classmethod
    def splits_present(cls, root: Path) -> list[str]:
        return list(split_lists(root)) or ["all"]

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        transform: Transform | None = None,
        ignore_index: int = 255,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        val_fraction: float = 0.1,
    ) -> None:
        fix = "point root (--data) at the unpacked export (labelmap.txt, JPEGImages/, SegmentationClass/)"
        root = require_dir(Path(root), "dataset", fix)
        self.labelmap = root / LABELMAP
        if not self.labelmap.is_file():
            raise DataError(f"{self.labelmap}: not found; {fix}")
        spec = parse_labelmap(self.labelmap)
        image_dir = require_dir(root / "JPEGImages", "image", f"export with 'Save images' checked; {fix}")
        mask_dir = require_dir(root / "SegmentationClass", "mask", fix)
        images = self._split_images(root, image_dir, split, val_fraction)
        samples = pair_masks(images, lambda image: mask_dir / image.relative_to(image_dir).with_suffix(".png"))
        self.mask_colors = spec.colors or []
        super().__init__(
            samples,
            split=split,
            class_names=spec.names,
            palette=self.mask_colors,
            ignore_index=ignore_index,
            transform=transform,
            max_pixels=max_pixels,
        )

    @staticmethod
    def _split_images(root: Path, image_dir: Path, split: str, val_fraction: float) -> list[Path]:
        lists = split_lists(root)
        if split in lists:
            return images_by_stem(image_dir, read_split_file(lists[split]), lists[split], recursive=True)
        if len(lists) > 1:
            raise ConfigError(choices_message(f"split of {root}", split, list(lists)))
        if len(lists) == 1:
            (only,) = lists.values()
            images = images_by_stem(image_dir, read_split_file(only), only, recursive=True)
        else:
            images = list_images(image_dir, recursive=True)
        if split == "all":
            return images
        if split in ("train", "val"):
            return auto_split(images, split, val_fraction, root)
        raise ConfigError(choices_message(f"split of {root}", split, [*lists, "all", "train", "val"]))

    def read_mask(self, path: Path) -> np.ndarray:
        return read_color_mask(
            path,
            self.mask_colors,
            ignore_index=self.ignore_index,
            table=str(self.labelmap),
            fix="add the label to the task (or repaint those pixels in CVAT) and export again",
        )
