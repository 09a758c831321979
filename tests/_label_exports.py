"""Tiny datasets as labelling tools export them, with the masks they must give.

Each builder writes real files (PNG/JPEG images, COCO JSON with RLE from
``pycocotools.mask.encode``, colour PNGs) and returns the expected class-index mask of
every image, computed independently of the code under test: shapes are axis-aligned
rectangles, whose raster under pycocotools' pixel convention (pixel (x, y) covers
[x, x+1) × [y, y+1)) is a numpy slice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

SIZE = (32, 32)  # height, width of every image here (the training tests' crop)
IGNORE = 255


def box(x0: int, y0: int, x1: int, y1: int) -> tuple[int, int, int, int]:
    """A rectangle with corners (x0, y0) and (x1, y1): pixels x0..x1-1 of rows y0..y1-1."""
    return x0, y0, x1, y1


def polygon(rect: tuple[int, int, int, int]) -> list[list[float]]:
    """The rectangle as a COCO polygon (clockwise corners)."""
    x0, y0, x1, y1 = rect
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def binary(rect: tuple[int, int, int, int]) -> np.ndarray:
    """The rectangle's raster, uint8 (H, W)."""
    x0, y0, x1, y1 = rect
    out = np.zeros(SIZE, dtype=np.uint8)
    out[y0:y1, x0:x1] = 1
    return out


def compressed_rle(rect: tuple[int, int, int, int]) -> dict[str, Any]:
    """The rectangle as a compressed RLE, encoded by pycocotools."""
    from pycocotools import mask as mask_api

    rle = mask_api.encode(np.asfortranarray(binary(rect)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def uncompressed_rle(rect: tuple[int, int, int, int]) -> dict[str, Any]:
    """The rectangle as an uncompressed RLE (column-major run lengths, zeros first), as CVAT writes crowds."""
    flat = binary(rect).ravel(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0, *counts]
    return {"size": list(SIZE), "counts": counts}


def _image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (*SIZE, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


# COCO: categories with sparse ids → classes 1, 2, 3 (0 = background).
COCO_CATEGORIES = [{"id": 1, "name": "road"}, {"id": 3, "name": "car"}, {"id": 7, "name": "person"}]
COCO_CLASSES = ["background", "road", "car", "person"]
ROAD, CAR, PERSON = box(0, 20, 32, 32), box(4, 14, 14, 26), box(20, 6, 24, 24)
CROWD, CHILD = box(0, 0, 12, 12), box(2, 2, 5, 6)  # a crowd of people, one of them outlined alone


def coco_scene(image_id: int, first_annotation: int, shift: int = 0) -> tuple[list[dict[str, Any]], np.ndarray]:
    """The annotations of one image and its expected mask.

    In file order: a car polygon over the road, the road polygon (larger: painted first,
    the car stays on top although listed before it), a person as a compressed RLE that
    overlaps the road, a crowd of people as an uncompressed RLE (→ ignore, or person with
    ``crowd="class"``), a box without a mask (not painted), and a child outlined inside the
    crowd (smaller: on top of it). ``shift`` moves the car and person right.
    """
    car = (CAR[0] + shift, CAR[1], CAR[2] + shift, CAR[3])
    person = (PERSON[0] + shift, PERSON[1], PERSON[2] + shift, PERSON[3])

    def annotation(number: int, category: int, segmentation: Any, crowd: int = 0) -> dict[str, Any]:
        return {
            "id": first_annotation + number,
            "image_id": image_id,
            "category_id": category,
            "segmentation": segmentation,
            "iscrowd": crowd,
            "bbox": [0, 0, 1, 1],
            "area": 1.0,
        }

    annotations = [
        annotation(0, 3, polygon(car)),
        annotation(1, 1, polygon(ROAD)),
        annotation(2, 7, compressed_rle(person)),
        annotation(3, 7, uncompressed_rle(CROWD), crowd=1),
        annotation(4, 3, []),  # a box only
        annotation(5, 7, polygon(CHILD)),
    ]
    expected = np.zeros(SIZE, dtype=np.int64)
    for rect, value in ((ROAD, 1), (CROWD, IGNORE), (car, 2), (person, 3), (CHILD, 3)):  # largest area first
        expected[binary(rect).astype(bool)] = value
    return annotations, expected


def cvat_coco(root: Path) -> dict[str, dict[str, np.ndarray]]:
    """CVAT "COCO 1.0" with subsets train (3 images) and val (1): images/<subset>/,
    annotations/instances_<subset>.json. Returns split → image name → expected mask."""
    expected: dict[str, dict[str, np.ndarray]] = {}
    counter = 0
    for subset, count in (("train", 3), ("val", 1)):
        images, annotations, expected[subset] = [], [], {}
        for index in range(count):
            counter += 1
            name = f"frame_{counter:06d}.png"
            _image(root / "images" / subset / name, counter)
            images.append({"id": counter, "file_name": name, "width": SIZE[1], "height": SIZE[0]})
            scene, mask = coco_scene(counter, 10 * counter, shift=index)
            annotations += scene
            expected[subset][name] = mask
        _write_json(
            root / "annotations" / f"instances_{subset}.json",
            {"images": images, "annotations": annotations, "categories": COCO_CATEGORIES},
        )
    return expected


def label_studio_coco(root: Path) -> dict[str, np.ndarray]:
    """Label Studio "COCO": images/ + result.json, category ids from 0 (Car 0, Road 1 →
    classes 1, 2), file names as Label Studio writes them (``images/…`` or an upload
    path), 5 annotated images and one nobody annotated (left out by default)."""
    images, annotations, expected = [], [], {}
    for index in range(6):
        name = f"3f9a{index}c-frame{index}.png"
        _image(root / "images" / name, 100 + index)
        file_name = f"images/{name}" if index % 2 else f"/data/upload/1/{name}"
        images.append({"id": index, "file_name": file_name, "width": SIZE[1], "height": SIZE[0]})
        mask = np.zeros(SIZE, dtype=np.int64)
        if index < 5:
            car = box(2 + index, 4, 12 + index, 12)
            annotations.append(_ls_annotation(len(annotations), index, 1, polygon(ROAD)))
            annotations.append(_ls_annotation(len(annotations), index, 0, polygon(car)))
            mask[binary(ROAD).astype(bool)] = 2
            mask[binary(car).astype(bool)] = 1
        expected[name] = mask
    categories = [{"id": 0, "name": "Car"}, {"id": 1, "name": "Road"}]
    _write_json(root / "result.json", {"images": images, "annotations": annotations, "categories": categories})
    return expected


def _ls_annotation(number: int, image_id: int, category: int, segmentation: Any) -> dict[str, Any]:
    return {
        "id": number,
        "image_id": image_id,
        "category_id": category,
        "segmentation": segmentation,
        "bbox": [0, 0, 1, 1],
        "ignore": 0,
        "iscrowd": 0,
        "area": 1.0,
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


# Colour tables: CVAT's labelmap.txt and a classes.txt with colours.
CVAT_LABELS = [("background", (0, 0, 0)), ("road", (128, 64, 128)), ("car", (0, 0, 142)), ("sky", (70, 130, 180))]


def index_masks(count: int, classes: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` masks of horizontal bands of classes 0..classes-1 (every class present)."""
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(count):
        bands = rng.permutation(classes)
        rows = np.repeat(bands, -(-SIZE[0] // classes))[: SIZE[0]]
        mask = np.repeat(rows[:, None], SIZE[1], axis=1).astype(np.int64)
        mask[rng.integers(0, SIZE[0]), :8] = int(bands[0])  # not only whole bands
        masks.append(mask)
    return masks


def paint(mask: np.ndarray, colors: list[tuple[int, int, int]]) -> np.ndarray:
    """Class indices (H, W) → colours uint8 (H, W, 3)."""
    return np.asarray(colors, dtype=np.uint8)[mask]


def cvat_mask_export(root: Path) -> dict[str, dict[str, np.ndarray]]:
    """CVAT "Segmentation mask 1.1": labelmap.txt, JPEGImages/*.jpg, SegmentationClass/*.png
    (RGB), ImageSets/Segmentation/{train,val}.txt (4 and 2 images)."""
    (root / "SegmentationClass").mkdir(parents=True)
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (root / "labelmap.txt").write_text(
        "# label:color_rgb:parts:actions\n" + "".join(f"{n}:{r},{g},{b}::\n" for n, (r, g, b) in CVAT_LABELS)
    )
    colors = [color for _, color in CVAT_LABELS]
    masks = index_masks(6, len(CVAT_LABELS))
    expected: dict[str, dict[str, np.ndarray]] = {"train": {}, "val": {}}
    for index, mask in enumerate(masks):
        split = "train" if index < 4 else "val"
        name = f"frame_{index:06d}"
        _image(root / "JPEGImages" / f"{name}.jpg", 200 + index)
        Image.fromarray(paint(mask, colors)).save(root / "SegmentationClass" / f"{name}.png")
        expected[split][name] = mask
    for split, names in expected.items():
        (lists / f"{split}.txt").write_text("".join(f"{name}\n" for name in names))
    return expected


COLOUR_CLASSES = [("background", (0, 0, 0)), ("road", (128, 64, 128)), ("car", (0, 0, 142))]


def colour_folder(root: Path, count: int = 5) -> dict[str, np.ndarray]:
    """images/ + masks/ (RGB colour PNGs) + classes.txt naming each class's colour ("r g b" and "#rrggbb")."""
    (root / "masks").mkdir(parents=True)
    (root / "classes.txt").write_text("background 0 0 0\nroad 128,64,128\ncar #00008e\n")
    colors = [color for _, color in COLOUR_CLASSES]
    expected = {}
    for index, mask in enumerate(index_masks(count, len(COLOUR_CLASSES), seed=1)):
        name = f"street{index}"
        _image(root / "images" / f"{name}.png", 300 + index)
        Image.fromarray(paint(mask, colors)).save(root / "masks" / f"{name}.png")
        expected[name] = mask
    return expected


def cityscapes_colour_folder(root: Path, count: int = 5) -> dict[str, np.ndarray]:
    """images/ + masks/ coloured as Cityscapes' ``*_gtFine_color.png`` (the 19 classes'
    colours, a void label's colour in the top-left corner → ignore), no classes file."""
    from atrous.data import CITYSCAPES_PALETTE

    (root / "masks").mkdir(parents=True)
    expected = {}
    for index, mask in enumerate(index_masks(count, len(CITYSCAPES_PALETTE), seed=2)):
        colours = paint(mask, [tuple(c) for c in CITYSCAPES_PALETTE])
        colours[:3, :3] = (81, 0, 81)  # "ground", left out of the evaluation classes
        mask = mask.copy()
        mask[:3, :3] = IGNORE
        name = f"aachen_{index:06d}"
        _image(root / "images" / f"{name}.png", 400 + index)
        Image.fromarray(colours).save(root / "masks" / f"{name}.png")
        expected[name] = mask
    return expected
