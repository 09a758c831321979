"""Palettes: the VOC colour map, colourising and overlaying masks, palette PNGs, and
class files (names and optional colours) for folder datasets."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from atrous.errors import DataError, InputError
from atrous.files import atomic_path

Color = tuple[int, int, int]

CLASS_FILES = ("classes.txt", "classes.json", "classes.yaml", "classes.yml")


def voc_colormap(n: int = 256) -> list[Color]:
    """The PASCAL VOC colour map: bits of the class index spread over R, G, B, high bits first."""
    colors = []
    for index in range(n):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colors.append((r, g, b))
    return colors


def _as_numpy_mask(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"mask must be an integer array of shape (H, W), got {array.dtype} {array.shape}")
    return array


def _palette_table(palette: Sequence[Sequence[int]]) -> np.ndarray:
    table = np.zeros((256, 3), dtype=np.uint8)
    colors = np.asarray(palette, dtype=np.int64).reshape(-1, 3)[:256]
    if colors.size and (colors.min() < 0 or colors.max() > 255):
        raise InputError("palette colours must be (r, g, b) with components in 0..255")
    table[: len(colors)] = colors
    return table


def colorize(mask: np.ndarray | torch.Tensor, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """Colour a class-index mask (H, W) → uint8 (H, W, 3).

    Class ``i`` gets ``palette[i]``; values with no palette entry (the ignore index,
    negative values) are black.
    """
    array = _as_numpy_mask(mask)
    table = _palette_table(palette)
    valid = (array >= 0) & (array < len(palette)) & (array < 256)
    out = table[np.where(valid, array, 0)]
    out[~valid] = 0
    return out


def overlay(
    image: np.ndarray,
    mask: np.ndarray | torch.Tensor,
    palette: Sequence[Sequence[int]],
    alpha: float = 0.5,
) -> np.ndarray:
    """Blend class colours over an image: uint8 (H, W, 3) + mask (H, W) → uint8 (H, W, 3).

    ``alpha`` is the weight of the class colour; pixels without a class (ignore) keep
    the image unchanged.
    """
    array = _as_numpy_mask(mask)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if image.shape[:2] != array.shape:
        raise InputError(f"image {image.shape[:2]} and mask {array.shape} differ in size")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    colors = colorize(array, palette).astype(np.float32)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colors
    labelled = ((array >= 0) & (array < len(palette)))[..., None]
    return np.where(labelled, np.rint(blended), image).astype(np.uint8)


def save_index_png(path: str | Path, mask: np.ndarray | torch.Tensor, palette: Sequence[Sequence[int]]) -> None:
    """Write a mask (H, W) with values 0..255 as a palette ("P") PNG, atomically.

    The file is written to a temporary name in the same folder and renamed, so a crash
    never leaves a half-written PNG under ``path``.
    """
    image = index_image(mask, palette)
    with atomic_path(path) as temp:
        image.save(temp, format="PNG")


def index_image(mask: np.ndarray | torch.Tensor, palette: Sequence[Sequence[int]]) -> Image.Image:
    """A mask (H, W) with values 0..255 as a palette ("P") image, ready to save as PNG."""
    array = _as_numpy_mask(mask)
    if array.size and (array.min() < 0 or array.max() > 255):
        raise InputError(f"mask values must be in 0..255 to store in a PNG, got {array.min()}..{array.max()}")
    image = Image.fromarray(array.astype(np.uint8), mode="L").convert("P")
    image.putpalette(_palette_table(palette).ravel().tolist())
    return image


@dataclass(frozen=True)
class ClassSpec:
    """Class names, optional colours (one per class) and colours meaning "ignore"."""

    names: list[str]
    colors: list[Color] | None = None
    ignore_colors: tuple[Color, ...] = ()


_HEX = re.compile(r"^#([0-9a-fA-F]{6})$")


def _color(value: object, where: str) -> Color:
    if isinstance(value, str):
        match = _HEX.match(value.strip())
        if match:
            code = int(match.group(1), 16)
            return (code >> 16, (code >> 8) & 255, code & 255)
        value = re.split(r"[\s,]+", value.strip())
    try:
        rgb = tuple(int(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise DataError(f"{where}: colour {value!r} is not 'r g b' / [r, g, b] in 0..255 or '#rrggbb'")
    return rgb  # type: ignore[return-value]


_TXT_HEX = re.compile(r"^(.+?)[\s,]+(#[0-9a-fA-F]{6})$")
_TXT_RGB = re.compile(r"^(.+?)[\s,]+(\d+)[\s,]+(\d+)[\s,]+(\d+)$")


def _parse_txt_line(line: str, where: str) -> tuple[str, Color | None]:
    text = line.strip()
    match = _TXT_HEX.match(text)
    if match:
        return match.group(1).strip(" ,"), _color(match.group(2), where)
    match = _TXT_RGB.match(text)
    if match:
        return match.group(1).strip(" ,"), _color(match.groups()[1:], where)
    return text, None


def _parse_structured(data: object, where: str) -> ClassSpec:
    ignore: tuple[Color, ...] = ()
    if isinstance(data, dict):
        if "classes" not in data:
            raise DataError(f"{where}: expected a list of classes or a mapping with key 'classes'")
        raw_ignore = data.get("ignore_color")
        if raw_ignore is not None:
            ignore = (_color(raw_ignore, where),)
        data = data["classes"]
    if not isinstance(data, list):
        raise DataError(f"{where}: 'classes' must be a list of names or of {{name, color}} entries")
    names: list[str] = []
    colors: list[Color | None] = []
    for i, entry in enumerate(data):
        if isinstance(entry, str):
            names.append(entry)
            colors.append(None)
        elif isinstance(entry, dict) and "name" in entry:
            names.append(str(entry["name"]))
            color = entry.get("color", entry.get("colour"))
            colors.append(None if color is None else _color(color, f"{where} entry {i}"))
        else:
            raise DataError(f"{where}: entry {i} ({entry!r}) must be a name or {{name: ..., color: [r, g, b]}}")
    return _finish(names, colors, ignore, where)


def check_unique_names(names: Sequence[str], where: str) -> None:
    """``DataError`` when two classes share a name (their IoUs and colours could not be told apart)."""
    repeated = sorted({name for name in names if list(names).count(name) > 1})
    if repeated:
        raise DataError(
            f"{where}: class name(s) {', '.join(map(repr, repeated))} appear more than once; "
            "give every class its own name"
        )


def _finish(names: list[str], colors: list[Color | None], ignore: tuple[Color, ...], where: str) -> ClassSpec:
    if not names:
        raise DataError(f"{where}: lists no classes; write one class name per line (optionally 'r g b')")
    check_unique_names(names, where)
    given = [c is not None for c in colors]
    if any(given) and not all(given):
        missing = [names[i] for i, g in enumerate(given) if not g][:5]
        raise DataError(f"{where}: colours are given for some classes but not for {missing}; give all or none")
    return ClassSpec(names, colors if all(given) else None, ignore)  # type: ignore[arg-type]


def parse_class_file(path: str | Path) -> ClassSpec:
    """Read class names (and colours) from ``classes.txt``, ``.json`` or ``.yaml``.

    txt: one class per line in index order, ``name``, ``name r g b`` or ``name #rrggbb``;
    blank lines and lines starting with ``#`` are skipped. json/yaml: a list of names or
    of ``{name, color: [r, g, b]}``, or a mapping ``{classes: [...], ignore_color: [r, g, b]}``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the classes file ({exc})") from exc
    if path.suffix == ".txt":
        names, colors = [], []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip() and not line.lstrip().startswith("#"):
                name, color = _parse_txt_line(line, f"{path} line {number}")
                names.append(name)
                colors.append(color)
        return _finish(names, colors, (), str(path))
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: not valid {path.suffix[1:]} ({exc})") from exc
    return _parse_structured(data, str(path))


def find_class_file(root: str | Path) -> Path | None:
    """The first of ``classes.{txt,json,yaml,yml}`` present in ``root``, if any."""
    for name in CLASS_FILES:
        candidate = Path(root) / name
        if candidate.is_file():
            return candidate
    return None
