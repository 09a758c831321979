"""The dataset base class and the helpers every on-disk layout shares.

A dataset is a list of ``(image_path, mask_path)`` pairs checked at construction
(folder exists, not empty, every image has a mask); pixels are read and validated
lazily, one item at a time, so a bad file fails with its name when it is reached.
"""

from __future__ import annotations

import contextlib
import contextvars
import glob
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from atrous.data.io import DEFAULT_MAX_PIXELS, check_images, image_suffixes, read_image, read_mask
from atrous.data.palette import check_unique_names
from atrous.errors import ConfigError, DataError, choices_message
from atrous.files import os_problem

logger = logging.getLogger(__name__)

Sample = tuple[Path, Path]
Transform = Callable[[torch.Tensor, torch.Tensor], Any]


def check_split(split: str, valid: Sequence[str], dataset: str) -> str:
    """Return ``split`` if it is one of ``valid``, else raise ``ConfigError`` listing them."""
    if split not in valid:
        raise ConfigError(choices_message(f"{dataset} split", split, list(valid)))
    return split


def require_dir(path: Path, what: str, fix: str) -> Path:
    """Return ``path`` if it is a folder, else raise ``DataError`` naming it and ``fix``."""
    if not path.is_dir():
        raise DataError(f"{path}: {what} folder not found; {fix}")
    return path


def list_images(
    folder: Path,
    extensions: Sequence[str] | None = None,
    *,
    recursive: bool = False,
    fix: str = "check the dataset root and split",
) -> list[Path]:
    """Image files in ``folder``, sorted; error (ending with ``fix``) if it is missing or has none.

    ``extensions`` (lower case, with the dot; matched case-insensitively) default to
    every format ``read_image`` decodes. Broken symbolic links are listed, so that
    reading them names them rather than skipping them.
    """
    require_dir(folder, "image", fix)
    suffixes = image_suffixes() if extensions is None else tuple(extensions)
    pattern = "**/*" if recursive else "*"
    files = sorted(
        p
        for p in folder.glob(pattern)
        if p.suffix.lower() in suffixes and (p.is_file() or p.is_symlink() and not p.exists())
    )
    if not files:
        shown = (
            ".png, .jpg, .jpeg, .bmp, .webp, .tif … any format PIL reads" if extensions is None else ", ".join(suffixes)
        )
        raise DataError(f"{folder}: no images ({shown}) found; {fix}")
    return files


# While ``collect_unpaired`` is active: the list that pairing problems go to instead of raising.
_UNPAIRED: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("atrous_unpaired", default=None)


@contextlib.contextmanager
def collect_unpaired() -> Iterator[list[str]]:
    """Within the block, datasets leave out images they cannot pair (no mask, a listed
    image missing) instead of raising, and the yielded list gets one line per such image
    (for ``atrous data check``, which reports every problem rather than the first)."""
    found: list[str] = []
    token = _UNPAIRED.set(found)
    try:
        yield found
    finally:
        _UNPAIRED.reset(token)


def leave_out(problems: Sequence[str]) -> bool:
    """Within ``collect_unpaired``: record ``problems`` (images that cannot be paired, one
    line each) and return True, the caller leaving those images out; else False (it raises)."""
    found = _UNPAIRED.get()
    if found is None:
        return False
    found.extend(problems)
    return True


def pair_masks(images: Sequence[Path], mask_for: Callable[[Path], Path]) -> list[Sample]:
    """Pair every image with ``mask_for(image)``; error listing images whose mask is missing
    (within ``collect_unpaired``: those images are left out, one line each in its list)."""
    pairs = [(image, mask_for(image)) for image in images]
    missing = [(image, mask) for image, mask in pairs if not mask.is_file()]
    if missing and leave_out([f"{image}: no mask ({mask_problem(mask)})" for image, mask in missing]):
        return [(image, mask) for image, mask in pairs if mask.is_file()]
    if missing:
        shown = "; ".join(f"{image} ({mask_problem(mask)})" for image, mask in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise DataError(
            f"{len(missing)} of {len(pairs)} images have no mask: {shown}{more}; add the masks or remove those images"
        )
    return pairs


def mask_problem(mask: Path) -> str:
    """Why the expected ``mask`` cannot be read, in a few words: "expected …" (no file), a
    broken link or link loop, a folder, or a same-named file in another format (a JPEG
    mask, whose compression changes label values at edges)."""
    if mask.is_symlink() or mask.exists():
        try:
            os.stat(mask)
        except OSError as error:
            return f"its mask {mask} is {os_problem(error, mask)}"
        if mask.is_dir():
            return f"its mask {mask} is a folder, not a file"
    others = sorted(p.name for p in mask.parent.glob(f"{glob.escape(mask.stem)}.*") if p.suffix != mask.suffix)
    if others:
        lossy = " (a JPEG's compression changes label values at edges)" if _is_jpeg(others[0]) else ""
        return f"expected {mask}, found {others[0]}: masks are {mask.suffix.lstrip('.').upper()} files{lossy}"
    return f"expected {mask}"


def _is_jpeg(name: str) -> bool:
    return Path(name).suffix.lower() in (".jpg", ".jpeg", ".jpe", ".jfif")


def images_by_stem(folder: Path, stems: Sequence[str], list_file: Path, *, recursive: bool = False) -> list[Path]:
    """The images of ``folder`` named (by stem, any image suffix; ``recursive``: by path
    under ``folder`` without suffix, e.g. ``sub/a``) in the split list ``list_file``, in
    list order; ``DataError`` naming the listed ones that are missing (within
    ``collect_unpaired``: left out, one line each)."""
    found = {p.relative_to(folder).with_suffix("").as_posix(): p for p in list_images(folder, recursive=recursive)}
    missing = [s for s in stems if s not in found]
    if missing and not leave_out([f"{list_file}: lists {s!r}, which is not in {folder}" for s in missing]):
        raise DataError(
            f"{list_file}: {len(missing)} listed images are not in {folder} (e.g. {missing[:3]}); "
            "fix the list or add the images"
        )
    return [found[s] for s in stems if s in found]


def auto_split(items: Sequence[Any], split: str, val_fraction: float, root: Path) -> list[Any]:
    """``split`` ("train" or "val") of ``items`` where a dataset has no split of its own: a
    fixed random partition (``val_fraction`` of the items are val, seed 0, by position),
    the same in every run."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if len(items) < 2:
        raise DataError(f"{root}: {len(items)} image(s) cannot be split into train and val; add images")
    n_val = min(len(items) - 1, max(1, round(len(items) * val_fraction)))
    order = np.random.default_rng(0).permutation(len(items))
    chosen = sorted(order[:n_val] if split == "val" else order[n_val:])
    logger.info("%s: no split folders or lists; using %d of %d images as %s", root, len(chosen), len(items), split)
    return [items[i] for i in chosen]


def read_split_file(path: Path) -> list[str]:
    """Non-empty stripped lines (stems or ids) of a split list file; error if none."""
    if not path.is_file():
        raise DataError(f"{path}: split list not found; check the dataset root and split name")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise DataError(f"{path}: cannot read the split list: {os_problem(error, path)}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: the split list is not UTF-8 text; list one image name per line") from None
    stems = [line.split()[0] for line in text.splitlines() if line.strip()]
    if not stems:
        raise DataError(f"{path}: split list is empty; list one image name per line")
    twice = [stem for stem, count in Counter(stems).items() if count > 1]
    if twice:
        more = f" and {len(twice) - 3} more" if len(twice) > 3 else ""
        raise DataError(f"{path} lists {', '.join(map(repr, twice[:3]))}{more} more than once; list each image once")
    return stems


def check_mask_size(image: Path, image_shape: Sequence[int], mask: str, mask_shape: Sequence[int]) -> None:
    """``DataError`` naming both when the mask's (H, W) is not the image's."""
    if tuple(mask_shape) != tuple(image_shape):
        raise DataError(
            f"{image} is {image_shape[1]}x{image_shape[0]} but its mask {mask} is "
            f"{mask_shape[1]}x{mask_shape[0]}; masks must have the image's exact size"
        )


LabelMapSpec = str | Path | Mapping[Any, Any]


def parse_label_map(spec: LabelMapSpec, ignore_index: int) -> dict[int, int]:
    """Mask value → class index, from ``"11:255,3:1"``, a file, or a mapping.

    A file is YAML or JSON (a mapping ``{11: 255}``) or plain text (one ``a:b`` or
    ``a b`` per line, ``#`` comments). A target may be ``ignore`` (= ``ignore_index``).
    Raises ``ConfigError`` naming the entry that is not ``value:value``.
    """
    source = "label_map"
    if isinstance(spec, Mapping):
        pairs = list(spec.items())
    else:
        text = str(spec).strip()
        path = Path(text)
        if path.is_file():
            source = str(path)
            pairs = _label_map_file(path)
        elif path.suffix.lower() in (".yaml", ".yml", ".json", ".txt") or "/" in text:
            raise ConfigError(f"label map file {path} not found; give a file or value pairs such as 11:255,12:ignore")
        else:
            pairs = [
                tuple(item.split(":", 1)) if ":" in item else (item, None) for item in text.split(",") if item.strip()
            ]
    table: dict[int, int] = {}
    for raw, mapped in pairs:
        if mapped is None:
            raise ConfigError(
                f"{source}: {str(raw).strip()!r} is not a value:class pair; write e.g. 11:255 or 11:ignore"
            )
        key, value = (
            _label_value(raw, source, ignore_index, target=False),
            _label_value(mapped, source, ignore_index, target=True),
        )
        if key in table and table[key] != value:
            raise ConfigError(f"{source} maps mask value {key} twice ({table[key]} and {value}); keep one")
        table[key] = value
    if not table:
        raise ConfigError(f"{source} is empty; give value pairs such as 11:255")
    return table


def _label_map_file(path: Path) -> list[tuple[Any, Any]]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read the label map {path}: {getattr(error, 'strerror', None) or error}") from None
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"label map {path} is not valid YAML/JSON: {error}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"label map {path} must hold a mapping of mask value: class index, e.g. {{11: 255}}")
        return list(values.items())
    pairs = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            parts = line.replace(":", " ").split()
            pairs.append((parts[0], parts[1]) if len(parts) == 2 else (line, None))
    return pairs


def _label_value(value: Any, source: str, ignore_index: int, *, target: bool) -> int:
    if target and isinstance(value, str) and value.strip().lower() == "ignore":
        return ignore_index
    try:
        number = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or not 0 <= number <= 65535 and not (target and number == ignore_index):
        what = "a class index or 'ignore'" if target else "a mask value (0..255)"
        raise ConfigError(f"{source}: {value!r} is not {what}; write pairs as value:class, e.g. 11:255")
    if not target and number > 255:
        raise ConfigError(f"{source}: mask value {number} cannot be mapped (label maps cover 8-bit masks, 0..255)")
    return number


DATASETS: dict[str, type[SegmentationDataset]] = {}  # filled by register_dataset


def register_dataset(
    name: str, *, detect_order: int = 50
) -> Callable[[type[SegmentationDataset]], type[SegmentationDataset]]:
    """Class decorator: ``build_dataset(name, ...)``, ``--dataset name`` and layout detection
    know the class from then on. Layouts are tried by ascending ``detect_order`` (a more
    specific layout before a more general one: the plain images/ + masks/ folder last)."""

    def add(cls: type[SegmentationDataset]) -> type[SegmentationDataset]:
        if name in DATASETS and DATASETS[name] is not cls:
            raise ConfigError(f"dataset {name!r} is already registered ({DATASETS[name].__name__})")
        DATASETS[name] = cls
        cls.detect_order = detect_order
        return cls

    return add


def detection_order() -> list[tuple[str, type[SegmentationDataset]]]:
    """The registered datasets that have a layout, in the order detection tries them."""
    named = [(name, cls) for name, cls in DATASETS.items() if cls.layout is not None]
    return sorted(named, key=lambda item: item[1].detect_order)


def any_split(root: Path, pairs: Sequence[tuple[str, str]]) -> bool:
    """Whether ``root`` holds the (images, labels) folder pair of at least one split."""
    return any((root / images).is_dir() and (root / labels).is_dir() for images, labels in pairs)


class SegmentationDataset(Dataset):
    """Base of every atrous dataset: items are ``(image, mask)``.

    Without ``transform``: image uint8 tensor (3, H, W), mask int64 tensor (H, W) with
    ``ignore_index`` for unlabelled pixels. With ``transform``: whatever
    ``transform(image, mask)`` returns.

    Attributes: ``num_classes``, ``class_names``, ``palette`` (list of (r, g, b)),
    ``ignore_index``, ``samples`` (list of (image_path, mask_path)), ``split``.

    What ``build_dataset`` asks the class (see ``register_dataset``): ``needs_root``
    (False for a generated dataset, built as ``cls(split, ...)``), ``layout`` (how its
    folder looks, in words; None: never detected) and ``recognises(root)``.
    """

    needs_root: bool = True
    layout: str | None = None
    detect_order: int = 50  # set by register_dataset

    @classmethod
    def recognises(cls, root: Path) -> bool:
        """Whether the folder ``root`` has this dataset's layout (for ``detect_layout``)."""
        return False

    @classmethod
    def splits_present(cls, root: Path) -> list[str]:
        """The splits ``root`` holds, for checking them all (``atrous data check``);
        by default every name in the class's ``splits``."""
        return list(getattr(cls, "splits", ()))

    def __init__(
        self,
        samples: Sequence[Sample],
        *,
        split: str,
        class_names: Sequence[str],
        palette: Sequence[Sequence[int]],
        ignore_index: int = 255,
        transform: Transform | None = None,
        label_map: Mapping[int, int] | np.ndarray | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        if len(palette) < len(class_names):
            raise ConfigError(f"palette has {len(palette)} colours for {len(class_names)} classes")
        if 0 <= ignore_index < len(class_names):
            outside = 255 if len(class_names) <= 255 else 65535  # 256+ classes need 16-bit masks
            raise ConfigError(
                f"ignore_index {ignore_index} is one of the {len(class_names)} class indices "
                f"(0..{len(class_names) - 1}); give an ignore value outside them, e.g. {outside}"
            )
        check_unique_names(class_names, f"{type(self).__name__} {split}")
        self.samples = list(samples)
        self.split = split
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.palette = [tuple(int(v) for v in color) for color in palette[: self.num_classes]]
        self.ignore_index = ignore_index
        self.transform = transform
        self.label_map = label_map
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, items={len(self)}, "
            f"num_classes={self.num_classes}, ignore_index={self.ignore_index})"
        )

    def read_mask(self, path: Path) -> np.ndarray:
        """Class indices (H, W) int64 of one mask file, validated against ``num_classes``."""
        return read_mask(path, num_classes=self.num_classes, ignore_index=self.ignore_index, label_map=self.label_map)

    def mask_of(self, index: int) -> np.ndarray:
        """The mask (H, W) int64 of item ``index``: its mask file read by ``read_mask``
        (a layout whose masks are not files, such as COCO's, rasterises it here)."""
        return self.read_mask(self.samples[index][1])

    def mask_source(self, index: int) -> str:
        """Where item ``index``'s mask comes from, for messages (its file, by default)."""
        return str(self.samples[index][1])

    def layout_problems(self) -> list[str]:
        """What construction found wrong but could read past (e.g. COCO annotations
        without a mask), one line each; ``atrous data check`` reports them."""
        return []

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``index`` as numpy arrays: image uint8 (H, W, 3), mask int64 (H, W)."""
        image_path = self.samples[index][0]
        image = read_image(image_path, max_pixels=self.max_pixels)
        mask = self.mask_of(index)
        check_mask_size(image_path, image.shape[:2], self.mask_source(index), mask.shape)
        return image, mask

    def check_images(self, limit: int | None = None) -> None:
        """Check the first ``limit`` (default every) image files from their headers before
        any work (``atrous.data.io.check_images``): one ``DataError`` naming each bad one."""
        check_images([image for image, _ in self.samples[:limit]], max_pixels=self.max_pixels)

    def masks(self) -> Iterator[np.ndarray]:
        """Every mask (H, W) int64 in order, without reading images (for class statistics)."""
        for index in range(len(self.samples)):
            yield self.mask_of(index)

    def __getitem__(self, index: int) -> Any:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        image, mask = self.load(index % len(self))
        image_t = torch.from_numpy(image).permute(2, 0, 1).contiguous()
        mask_t = torch.from_numpy(mask)
        if self.transform is not None:
            return self.transform(image_t, mask_t)
        return image_t, mask_t
