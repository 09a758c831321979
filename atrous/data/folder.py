"""A folder of images and masks: the layout for your own data.

::

    root/images/NAME.{png,jpg,bmp,webp,tif,…}     root/masks/NAME.png
    root/classes.txt | classes.json | classes.yaml   (optional: names, colours)

Splits, the first that applies:

1. subfolders ``root/images/<split>/`` and ``root/masks/<split>/``;
2. a list file ``root/<split>.txt`` of image names (stems), one per line;
3. no split subfolders nor ``train/val/test/trainval.txt`` lists: ``split="all"`` is every image, and ``"train"``/``"val"``
   are a fixed random partition (``val_fraction`` of the images, seed 0, by sorted
   name), the same in every run.

Masks are single-channel PNGs of class indices, or RGB colour PNGs when the classes
file gives every class a colour (``name r g b`` or ``name #rrggbb``; a colour no class
has is one error naming it, the mask and the pixel where it is first seen). With the
``colors`` option (``cityscapes``, ``camvid``, ``camvid32``: ``atrous.data.colors``) the
masks are colour-coded in that published convention instead, with its class names and
ignored colours, and no classes file. ``num_classes`` comes from the classes file, else from
the ``num_classes`` option (``--num-classes``), else from the masks themselves: the largest
value in any mask + 1 (the ignore index aside), logged with the values found.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from pathlib import Path

import numpy as np

from atrous.data.base import (
    LabelMapSpec,
    SegmentationDataset,
    Transform,
    auto_split,
    images_by_stem,
    list_images,
    pair_masks,
    parse_label_map,
    read_split_file,
    register_dataset,
    require_dir,
)
from atrous.data.colors import color_convention
from atrous.data.io import DEFAULT_MAX_PIXELS, mask_values, read_color_mask, read_mask
from atrous.data.palette import CLASS_FILES, ClassSpec, find_class_file, parse_class_file, voc_colormap
from atrous.errors import ConfigError, DataError, choices_message

logger = logging.getLogger(__name__)

_SPLIT_LISTS = ("train", "val", "test", "trainval")


def _warn_shared_images(train: Path, val: Path) -> None:
    """Warn (once per state of the two lists) when images are listed for training and validation."""
    _shared_images(str(train), str(val), train.stat().st_mtime_ns, val.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _shared_images(train: str, val: str, train_stamp: int, val_stamp: int) -> int:
    shared = sorted(set(read_split_file(Path(train))) & set(read_split_file(Path(val))))
    if shared:
        logger.warning(
            "%d image(s) are in both %s and %s (e.g. %s): validation on them measures memory, not accuracy; "
            "remove them from one list",
            len(shared),
            train,
            Path(val).name,
            ", ".join(shared[:3]),
        )
    return len(shared)


def classes_in_masks(root: Path, mask_root: Path, ignore_index: int, label_map: dict[int, int] | None = None) -> int:
    """The class count the masks under ``mask_root`` (every split) imply: largest value + 1
    (after ``label_map``), the ignore index aside. Logs how many and which values, and how to name them."""
    stamp = mask_root.stat().st_mtime_ns
    mapping = tuple(sorted((label_map or {}).items()))
    return _scan_masks(str(root), str(mask_root.resolve()), ignore_index, stamp, mapping)


@functools.lru_cache(maxsize=8)
def _scan_masks(root: str, mask_root: str, ignore_index: int, stamp: int, mapping: tuple[tuple[int, int], ...]) -> int:
    """The class count, logged once with the values found; cached per folder state (train and val share it)."""
    masks = sorted(Path(mask_root).rglob("*.png"))
    found: set[int] = set()
    for mask in masks:
        found.update(int(v) for v in mask_values(mask))
    renamed = dict(mapping)
    found = {renamed.get(value, value) for value in found}
    found.discard(ignore_index)
    if not found:
        raise DataError(
            f"{mask_root}: no class values found in {len(masks)} masks; pass --num-classes or write classes.txt"
        )
    if min(found) < 0:
        raise DataError(f"{mask_root}: masks hold negative values {sorted(v for v in found if v < 0)[:5]}")
    values = sorted(found)
    if values[-1] > 255:
        raise DataError(
            f"{mask_root}: masks hold values up to {values[-1]} ({len(values)} distinct): they look like 16-bit "
            "images, not class indices; save 8-bit PNGs whose pixel value is the class index (255 = ignore)"
        )
    count = values[-1] + 1
    if count > 8 and len(values) < count / 2:
        raise DataError(
            f"{mask_root}: masks hold values {', '.join(map(str, values[:12]))}{' …' if len(values) > 12 else ''}, "
            f"so {count - len(values)} of the {count} class ids they imply have no pixel (a stray value?); "
            "pass --num-classes N (a mask value ≥ N is then refused with its file) or name the classes in classes.txt; "
            f"if {values[-1]} marks unlabelled pixels, pass --ignore-index {values[-1]} "
            f"(or rename values with --label-map {values[-1]}:255)"
        )
    shown = ", ".join(map(str, values[:20])) + (" …" if len(values) > 20 else "")
    empty = f"; classes {sorted(set(range(count)) - set(values))[:10]} have no pixels" if len(values) < count else ""
    logger.info(
        "%s: no classes file and no --num-classes: found %d classes in %d masks (values %s%s); "
        "name them in %s, one per line",
        root,
        count,
        len(masks),
        shown,
        empty,
        Path(root) / "classes.txt",
    )
    return count


@register_dataset("folder", detect_order=90)
class FolderDataset(SegmentationDataset):
    """Images and masks paired by file name; see the module docstring for the layout."""

    layout = "images/ + masks/"

    @classmethod
    def recognises(cls, root: Path) -> bool:
        return (root / "images").is_dir() and (root / "masks").is_dir()

    @classmethod
    def splits_present(cls, root: Path) -> list[str]:
        """Split subfolders, else split lists, else "all" (train and val: a partition of it)."""
        images = root / "images"
        subfolders = sorted(p.name for p in images.iterdir() if p.is_dir()) if images.is_dir() else []
        lists = [name for name in _SPLIT_LISTS if (root / f"{name}.txt").is_file()]
        return subfolders or lists or ["all"]

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        transform: Transform | None = None,
        num_classes: int | None = None,
        ignore_index: int = 255,
        label_map: LabelMapSpec | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        val_fraction: float = 0.1,
        colors: str | None = None,
    ) -> None:
        root = require_dir(Path(root), "dataset", "point root (--data) at the folder holding images/ and masks/")
        fix = "expected ROOT/images/<name>.png|jpg|bmp|… and ROOT/masks/<same name>.png"
        image_root = require_dir(root / "images", "images", fix)
        mask_root = require_dir(root / "masks", "masks", fix)
        images, mask_dir = self._split_images(root, image_root, mask_root, split, val_fraction)
        twins = sorted(stem for stem, count in Counter(image.stem for image in images).items() if count > 1)[:3]
        if twins:
            raise DataError(f"{root}: several images share the name(s) {twins} (e.g. a.png and a.jpg); keep one each")
        samples = pair_masks(images, lambda image: mask_dir / f"{image.stem}.png")

        if colors is not None and label_map is not None:
            raise ConfigError("label_map renames mask values; colour masks (colors=...) have none: drop one of the two")
        mapping = parse_label_map(label_map, ignore_index) if label_map is not None else None
        if colors is None:
            spec = self._classes(root, num_classes, mask_root, ignore_index, mapping)
        else:
            spec = self._convention(root, colors, num_classes)
        self.mask_colors = spec.colors
        self.ignore_colors = spec.ignore_colors
        self.colors = colors
        class_file = find_class_file(root)
        self.color_table = f"the {colors} colours" if colors else str(class_file or "the class palette")
        super().__init__(
            samples,
            split=split,
            class_names=spec.names,
            palette=spec.colors or voc_colormap(len(spec.names)),
            ignore_index=ignore_index,
            transform=transform,
            label_map=mapping,
            max_pixels=max_pixels,
        )

    @staticmethod
    def _split_images(
        root: Path, image_root: Path, mask_root: Path, split: str, val_fraction: float
    ) -> tuple[list[Path], Path]:
        subfolders = sorted(p.name for p in image_root.iterdir() if p.is_dir())
        # Other .txt files (notes, READMEs) are not splits unless asked for by name.
        lists = [name for name in _SPLIT_LISTS if (root / f"{name}.txt").is_file()]
        if split in subfolders:
            mask_dir = require_dir(mask_root / split, "masks", f"split folders need masks/{split}/ too")
            return list_images(image_root / split), mask_dir
        if (root / f"{split}.txt").is_file() and split != "classes":
            list_file = root / f"{split}.txt"
            stems = read_split_file(list_file)
            if split in ("train", "val") and (root / "train.txt").is_file() and (root / "val.txt").is_file():
                _warn_shared_images(root / "train.txt", root / "val.txt")
            return images_by_stem(image_root, stems, list_file), mask_root
        if subfolders:
            raise ConfigError(choices_message(f"split of {root}", split, subfolders + lists))
        images = list_images(image_root)
        if split == "all":
            return images, mask_root
        if lists:
            raise ConfigError(choices_message(f"split of {root}", split, lists + ["all"]))
        if split in ("train", "val"):
            return auto_split(images, split, val_fraction, root), mask_root
        raise ConfigError(
            choices_message(f"split of {root} (no split folders or lists)", split, ["all", "train", "val"])
        )

    @staticmethod
    def _classes(
        root: Path, num_classes: int | None, mask_root: Path, ignore_index: int, label_map: dict[int, int] | None
    ) -> ClassSpec:
        class_file = find_class_file(root)
        if class_file is None:
            if num_classes is None:
                num_classes = classes_in_masks(root, mask_root, ignore_index, label_map)
            if num_classes < 1:
                raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
            return ClassSpec([f"class_{i}" for i in range(num_classes)])
        spec = parse_class_file(class_file)
        if num_classes is not None and num_classes != len(spec.names):
            raise ConfigError(
                f"num_classes={num_classes} but {class_file} lists {len(spec.names)} classes; "
                "drop the option or fix the file"
            )
        return spec

    @staticmethod
    def _convention(root: Path, colors: str, num_classes: int | None) -> ClassSpec:
        spec = color_convention(colors)
        class_file = find_class_file(root)
        if class_file is not None:
            raise ConfigError(
                f"{class_file} and colors={colors!r} both name the classes; keep one (remove the option or the file)"
            )
        if num_classes is not None and num_classes != len(spec.names):
            raise ConfigError(f"num_classes={num_classes} but the {colors} colours have {len(spec.names)} classes")
        return spec

    def read_mask(self, path: Path) -> np.ndarray:
        if self.colors is not None:  # every mask is colour-coded, whatever mode its PNG has
            return read_color_mask(
                path,
                self.mask_colors or [],
                ignore_index=self.ignore_index,
                ignore_colors=self.ignore_colors,
                table=self.color_table,
                fix=f"repaint those pixels, or name the colours the masks use (colors=, or {CLASS_FILES[0]})",
            )
        mask = read_mask(
            path,
            num_classes=_ANY_VALUE,  # checked below, with a message that names the options
            ignore_index=self.ignore_index,
            label_map=self.label_map,
            palette=self.mask_colors,
            ignore_colors=self.ignore_colors,
            table=self.color_table,
        )
        bad = ((mask < 0) | (mask >= self.num_classes)) & (mask != self.ignore_index)
        if bad.any():
            raise DataError(
                _out_of_range(path, np.unique(mask[bad]), self.num_classes, self.ignore_index, self.label_map)
            )
        return mask


_ANY_VALUE = 1 << 16  # above every value an 8- or 16-bit mask holds


def _out_of_range(path: Path, values: np.ndarray, num_classes: int, ignore_index: int, label_map: object) -> str:
    shown = ", ".join(str(int(v)) for v in values[:10]) + (" …" if len(values) > 10 else "")
    first = int(values[0])
    mapped = " (after the label map)" if label_map else ""
    return (
        f"{path}: mask values {shown}{mapped} are outside [0, {num_classes}) and not the ignore index "
        f"{ignore_index}; if {first} marks unlabelled pixels pass --ignore-index {first}, rename values with "
        f"--label-map {first}:{ignore_index} (or a file of value:class lines), or fix the mask"
    )
