"""COCO JSON (instances) as CVAT and Label Studio export it: polygons and RLE masks,
rasterised into class-index masks with pycocotools, one item at a time.

::

    root/images/[<subset>/]NAME.jpg …   root/annotations/instances_<subset>.json   (CVAT "COCO 1.0", COCO itself)
    root/images/NAME.jpg …              root/result.json                           (Label Studio "COCO")

Splits: each ``annotations/instances_<subset>.json`` is the split ``<subset>`` (CVAT
writes ``instances_default.json`` for a task without subsets). A dataset with one
annotation file also has ``"all"`` (its every image) and ``"train"``/``"val"``: a fixed
random partition of it (``val_fraction``, seed 0), the same in every run.

An image's ``file_name`` is looked for under ``images/<subset>/``, ``images/``,
``<subset>/`` and the root, with its folders and then without them (Label Studio writes
``images/…`` or upload paths); nothing outside the root is read.

How the masks are painted:

* **Classes.** Categories in ascending ``id`` order become classes 1, 2, …; class 0 is
  ``background``, the pixels no annotation covers. A category named ``background``
  (or ``_background_``, ``__background__``, any case) is class 0 itself, the others
  following. So sparse ids (COCO's 1..90) and Label Studio's ids from 0 give the same
  contiguous classes, with the category names as class names.
* **Overlaps.** Annotations are painted largest area first (pycocotools' pixel count;
  ties in file order), so a smaller object drawn over a larger one (a car on the road)
  stays on top.
* **Crowd regions** (``iscrowd: 1``) are painted, in the same order, with the ignore
  index (``crowd="ignore"``, the default: a crowd outline covers gaps between the objects
  it groups, so its pixels are not trusted for training); ``crowd="class"`` paints them with
  their category instead.
* **Images with nothing to paint** (no annotation, or boxes only) are left out
  (``unannotated="skip"``: labelling tools export frames nobody has labelled yet),
  logged with their count; ``unannotated="background"`` keeps them as all-background masks.
* **Annotations without a mask** (boxes only, or polygons of fewer than 3 points) cannot
  be painted: they are skipped, logged, and reported by ``atrous data check``.

Polygons use pycocotools' pixel convention: pixel (x, y) covers the square [x, x+1) ×
[y, y+1), so the rectangle with corners (2, 1) and (5, 4) paints columns 2..4 of rows
1..3. Every annotation is validated before pycocotools sees it (pycocotools' C decoder
writes past its buffer when an RLE's run lengths add up to more than the image, which
CVAT exports have been reported to hold): polygon coordinates finite and within one image
size of the image, RLE ``size`` equal to the image's, run lengths adding up to its pixel
count (a compressed RLE's are read for this check only; pycocotools decodes). A bad one is
one ``DataError`` naming the JSON file, the annotation id and the image.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from atrous.data.base import (
    SegmentationDataset,
    Transform,
    auto_split,
    leave_out,
    register_dataset,
    require_dir,
)
from atrous.data.io import DEFAULT_MAX_PIXELS, image_size, image_suffixes
from atrous.data.palette import voc_colormap
from atrous.errors import ConfigError, DataError, choices_message

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'atrous[coco]'"
LABEL_STUDIO_FILE = "result.json"
_BACKGROUND_NAMES = {"background", "_background_", "__background__"}
_CROWD_RULES = ("ignore", "class")
_UNANNOTATED_RULES = ("skip", "background")


def _mask_api() -> Any:
    """``pycocotools.mask``; ``ConfigError`` with the install line when it is missing."""
    try:
        from pycocotools import mask
    except ImportError:
        raise ConfigError(f"COCO annotations are rasterised with pycocotools: {INSTALL_HINT}") from None
    return mask


def annotation_files(root: Path) -> dict[str, Path]:
    """Split name → COCO JSON of ``root``: ``annotations/instances_<split>.json``, else
    Label Studio's ``result.json`` as the split ``"all"``."""
    folder = root / "annotations"
    files = {}
    if folder.is_dir():
        files = {p.stem[len("instances_") :]: p for p in sorted(folder.glob("instances_*.json")) if p.is_file()}
    if not files and (root / LABEL_STUDIO_FILE).is_file():
        files = {"all": root / LABEL_STUDIO_FILE}
    return files


@dataclass
class _Image:
    """One image of the JSON: its file, size and the annotations to paint."""

    path: Path
    image_id: Any
    file_name: str
    height: int
    width: int
    shapes: list[tuple[Any, int]] = field(default_factory=list)  # (checked segmentation, class value to paint)


@register_dataset("coco", detect_order=60)
class CocoDataset(SegmentationDataset):
    """COCO instance annotations painted into semantic masks; see the module docstring."""

    layout = "images/ + annotations/instances_<split>.json (CVAT COCO 1.0) or images/ + result.json (Label Studio)"

    @classmethod
    def recognises(cls, root: Path) -> bool:
        return (root / "images").is_dir() and bool(annotation_files(root))

    @classmethod
    def splits_present(cls, root: Path) -> list[str]:
        return list(annotation_files(root))

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        transform: Transform | None = None,
        ignore_index: int = 255,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        val_fraction: float = 0.1,
        crowd: str = "ignore",
        unannotated: str = "skip",
    ) -> None:
        root = require_dir(Path(root), "dataset", "point root (--data) at the folder holding images/ and the COCO JSON")
        if crowd not in _CROWD_RULES:
            raise ConfigError(choices_message("crowd rule", crowd, list(_CROWD_RULES)))
        if unannotated not in _UNANNOTATED_RULES:
            raise ConfigError(choices_message("unannotated rule", unannotated, list(_UNANNOTATED_RULES)))
        _mask_api()  # before any work: the install line, not a failure at the first item
        self.json_path, subset, partition = self._annotation_file(root, split)
        data = _load_json(self.json_path)
        class_names, class_of = _classes(data, self.json_path)
        self.crowd = crowd
        self._problems: list[str] = []
        images = self._images(data, root, subset, max_pixels)
        self._paint_list(data, images, class_of, ignore_index)
        kept = [image for image in images.values() if image.shapes or unannotated == "background"]
        if len(kept) < len(images):
            empty = [image.file_name for image in images.values() if not image.shapes]
            self._problems.append(
                f"{len(empty)} of {len(images)} images have nothing to paint and are left out "
                f"(unannotated='background' keeps them as background), e.g. {', '.join(empty[:3])}"
            )
            logger.info("%s: %s", self.json_path, self._problems[-1])
        self._unlisted = _unlisted_images(root, subset, {image.path for image in images.values()})
        if partition:
            kept = auto_split(kept, split, val_fraction, root)
        self._items = kept
        super().__init__(
            [(image.path, self.json_path) for image in kept],
            split=split,
            class_names=class_names,
            palette=voc_colormap(len(class_names)),
            ignore_index=ignore_index,
            transform=transform,
            max_pixels=max_pixels,
        )

    @staticmethod
    def _annotation_file(root: Path, split: str) -> tuple[Path, str, bool]:
        """(JSON file, its subset name, whether ``split`` is a partition of it)."""
        files = annotation_files(root)
        if not files:
            raise DataError(
                f"{root}: no annotations/instances_<split>.json nor {LABEL_STUDIO_FILE}; "
                "export the dataset as COCO 1.0 (CVAT) or COCO (Label Studio) and unpack it here"
            )
        if split in files:
            return files[split], split, False
        if len(files) == 1:
            ((subset, path),) = files.items()
            if split == "all":
                return path, subset, False
            if split in ("train", "val"):
                return path, subset, True
            raise ConfigError(choices_message(f"split of {root}", split, [subset, "all", "train", "val"]))
        raise ConfigError(choices_message(f"split of {root}", split, list(files)))

    def _images(self, data: dict[str, Any], root: Path, subset: str, max_pixels: int) -> dict[Any, _Image]:
        """The JSON's images whose file is found (in JSON order), by id."""
        entries = data.get("images")
        if not isinstance(entries, list) or not entries:
            raise DataError(f"{self.json_path}: lists no images ('images' is empty or missing)")
        bases = [root / "images" / subset, root / "images", root / subset, root]
        images: dict[Any, _Image] = {}
        for number, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), int | str):
                raise DataError(f"{self.json_path}: images[{number}] has no id (a whole number)")
            if not isinstance(entry.get("file_name"), str):
                raise DataError(f"{self.json_path}: images[{number}] has no file_name")
            image_id, name = entry["id"], entry["file_name"]
            if image_id in images:
                raise DataError(f"{self.json_path}: image id {image_id!r} appears twice; ids must be unique")
            path = _find_image(name, bases)
            if path is None:
                _skip_or_raise(
                    f"{self.json_path}: image {name!r} (id {image_id}) is not in {root / 'images'} nor {root}",
                    "; copy the exported images there, or remove the image from the JSON",
                )
                continue
            height, width = _declared_size(entry, path, self.json_path, max_pixels)
            images[image_id] = _Image(path, image_id, name, height, width)
        return images

    def _paint_list(
        self, data: dict[str, Any], images: dict[Any, _Image], class_of: dict[Any, int], ignore_index: int
    ) -> None:
        """Fill each image's shapes from the JSON's annotations, checked (see the module docstring)."""
        unpainted = []
        ids = {entry.get("id") for entry in data["images"] if isinstance(entry, dict)}
        for number, annotation in enumerate(data.get("annotations") or []):
            if not isinstance(annotation, dict):
                raise DataError(f"{self.json_path}: annotations[{number}] is not an object")
            where = f"{self.json_path}: annotation {annotation.get('id', f'[{number}]')}"
            image_id = annotation.get("image_id")
            if image_id not in ids:
                _skip_or_raise(f"{where} refers to image id {image_id!r}, which 'images' does not list")
                continue
            if image_id not in images:
                continue  # its image file is missing (already reported)
            image = images[image_id]
            where = f"{where} (image {image.file_name})"
            category = annotation.get("category_id")
            if category not in class_of:
                _skip_or_raise(f"{where} has category_id {category!r}, which 'categories' does not list")
                continue
            try:
                segmentation = _checked_segmentation(annotation.get("segmentation"), image.height, image.width)
            except ValueError as error:
                _skip_or_raise(f"{where}: {error}", "; fix or delete it in the labelling tool and export again")
                continue
            if segmentation is None:
                unpainted.append(where)
                continue
            crowd = bool(annotation.get("iscrowd", 0))
            value = ignore_index if crowd and self.crowd == "ignore" else class_of[category]
            image.shapes.append((segmentation, value))
        if unpainted:
            self._problems.append(
                f"{len(unpainted)} annotation(s) have no mask (a box only, or a polygon of fewer than 3 points) "
                f"and are not painted, e.g. {unpainted[0].split(': ', 1)[1]}"
            )
            logger.warning("%s: %s", self.json_path, self._problems[-1])

    def layout_problems(self) -> list[str]:
        unlisted = [
            f"{path}: an image {self.json_path.name} does not list (it has no annotations)" for path in self._unlisted
        ]
        return [f"{self.json_path}: {problem}" for problem in self._problems] + unlisted

    def mask_source(self, index: int) -> str:
        image = self._items[index]
        return f"{self.json_path} (image id {image.image_id}, {image.width}x{image.height})"

    def mask_of(self, index: int) -> np.ndarray:
        """Item ``index``'s annotations painted into (H, W) int64 class indices."""
        mask_api = _mask_api()
        image = self._items[index]
        height, width = image.height, image.width
        rles = [_to_rle(mask_api, segmentation, height, width) for segmentation, _ in image.shapes]
        out = np.zeros((height, width), dtype=np.int64)
        if not rles:
            return out
        areas = mask_api.area(rles)
        with warnings.catch_warnings():
            # pycocotools 2.0.11 under numpy 2 warns on every decode that its array wrapper takes no copy keyword
            warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
            for i in sorted(range(len(rles)), key=lambda i: -int(areas[i])):  # stable: ties keep file order
                out[mask_api.decode(rles[i]).astype(bool)] = image.shapes[i][1]
        return out


def _skip_or_raise(problem: str, fix: str = "") -> None:
    """Within ``collect_unpaired`` (``atrous data check``): record ``problem``, the caller
    skipping what it names; else ``DataError`` of ``problem`` and ``fix``."""
    if not leave_out([problem]):
        raise DataError(problem + fix)


def _load_json(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as file:
            data = json.load(file)
    except OSError as error:
        raise DataError(f"{path}: cannot read the annotations: {error.strerror or error}") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a JSON file ({error}); export the annotations as COCO again") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: not COCO annotations (a JSON object with images, annotations, categories)")
    return data


def _classes(data: dict[str, Any], path: Path) -> tuple[list[str], dict[Any, int]]:
    """(class names, category id → class index); see the module docstring for the rule."""
    categories = data.get("categories")
    if not isinstance(categories, list) or not categories:
        raise DataError(f"{path}: lists no categories; add the labels in the labelling tool and export again")
    for number, entry in enumerate(categories):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), int) or "name" not in entry:
            raise DataError(f"{path}: categories[{number}] has no whole-number id or no name")
    ordered = sorted(categories, key=lambda entry: entry["id"])
    ids = [entry["id"] for entry in ordered]
    if len(set(ids)) < len(ids):
        raise DataError(f"{path}: a category id appears twice; ids must be unique")
    background = [entry for entry in ordered if str(entry["name"]).strip().lower() in _BACKGROUND_NAMES][:1]
    rest = [entry for entry in ordered if entry not in background]
    names = [str(background[0]["name"]) if background else "background"] + [str(entry["name"]) for entry in rest]
    class_of = {entry["id"]: index for index, entry in enumerate(background + rest, start=0 if background else 1)}
    return names, class_of


def _unlisted_images(root: Path, subset: str, listed: set[Path]) -> list[Path]:
    """Image files in the subset's image folder (``images/<subset>/``, else ``images/``) that the JSON does not list."""
    folder = root / "images" / subset
    folder = folder if folder.is_dir() else root / "images"
    if not folder.is_dir():
        return []
    suffixes = set(image_suffixes())
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes and p.is_file() and p not in listed)


def _find_image(name: str, bases: Sequence[Path]) -> Path | None:
    """The file ``name`` (a JSON ``file_name``) names under one of ``bases``: its path as
    given, then with leading folders dropped one by one; never outside ``bases``."""
    parts = [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("/", "..", ".", "")]
    for start in range(len(parts)):
        relative = Path(*parts[start:])
        for base in bases:
            if (base / relative).is_file():
                return base / relative
    return None


def _declared_size(entry: dict[str, Any], path: Path, json_path: Path, max_pixels: int) -> tuple[int, int]:
    """(height, width) the JSON gives the image (its header's when it gives none), within ``max_pixels``."""
    height, width = entry.get("height"), entry.get("width")
    if height is None or width is None:
        height, width = image_size(path)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (height, width)):
        raise DataError(f"{json_path}: image {entry['file_name']!r} has size {width}x{height}, not whole numbers ≥ 1")
    if height * width > max_pixels:
        raise DataError(
            f"{json_path}: image {entry['file_name']!r} is {width}x{height} = {width * height} pixels, above "
            f"max_pixels={max_pixels} (--max-pixels); downscale it, or raise the limit"
        )
    return height, width


def _checked_segmentation(segmentation: Any, height: int, width: int) -> Any:
    """The segmentation ready for pycocotools (polygons of ≥ 3 points kept), None when it
    holds no mask; ``ValueError`` saying what is wrong with it."""
    if segmentation is None or segmentation == [] or segmentation == {}:
        return None
    if isinstance(segmentation, list):
        polygons = []
        for polygon in segmentation:
            if not isinstance(polygon, list) or len(polygon) % 2:
                raise ValueError("a polygon is not a flat list of x, y coordinates")
            if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in polygon):
                raise ValueError("a polygon has a coordinate that is not a finite number")
            xs, ys = polygon[0::2], polygon[1::2]
            if xs and (min(xs) < -width or max(xs) > 2 * width or min(ys) < -height or max(ys) > 2 * height):
                raise ValueError(
                    f"a polygon spans x {min(xs)}..{max(xs)}, y {min(ys)}..{max(ys)}, "
                    f"far outside the {width}x{height} image"
                )
            if len(polygon) >= 6:
                polygons.append([float(v) for v in polygon])
        return polygons or None
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        size = segmentation["size"]
        if list(size) != [height, width]:
            raise ValueError(f"its RLE size {size} (height, width) is not the image's [{height}, {width}]")
        counts = segmentation["counts"]
        if isinstance(counts, list):
            if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
                raise ValueError("its RLE counts are not whole numbers ≥ 0")
            total = sum(counts)
        elif isinstance(counts, str | bytes):
            total = _compressed_total(counts.decode("ascii", "replace") if isinstance(counts, bytes) else counts)
        else:
            raise ValueError("its RLE counts are neither a list nor a string")
        if total != height * width:
            raise ValueError(f"its RLE runs cover {total} pixels, not the image's {height * width}")
        return {"size": [height, width], "counts": counts}
    raise ValueError("its segmentation is neither polygons nor an RLE {size, counts}")


def _compressed_total(counts: str) -> int:
    """The pixels a compressed COCO RLE string's runs add up to (the run lengths of
    pycocotools' ``rleFrString``, read only to check them; ``ValueError`` if malformed)."""
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(counts):
                raise ValueError("its compressed RLE string ends inside a number")
            code = ord(counts[position]) - 48
            if not 0 <= code < 64:
                raise ValueError(f"its compressed RLE string has the character {counts[position]!r}")
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            position += 1
            shift += 5
            if not more and code & 0x10:
                value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise ValueError("its compressed RLE string holds a negative run length")
        runs.append(value)
    return sum(runs)


def _to_rle(mask_api: Any, segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """A checked segmentation (``_checked_segmentation``) as one compressed RLE."""
    if isinstance(segmentation, list):
        return mask_api.merge(mask_api.frPyObjects(segmentation, height, width))
    counts = segmentation["counts"]
    if isinstance(counts, list):
        return mask_api.frPyObjects(segmentation, height, width)
    return {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
