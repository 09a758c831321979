"""The confidence files ``atrous predict --confidence`` writes for one image.

``<stem>_confidence.png``: the confidence coloured by viridis (dark blue = low, yellow =
high) at the image's size, above a colour bar whose ends are labelled: 0 and 1 for the
max probability (1 = certain), 0 and ln K for the entropy in nats (0 = certain, ln K =
every class equally likely).

``<stem>_confidence16.png``: the values for programs, a 16-bit greyscale PNG of the
image's size: value = pixel / 65535 × scale, where scale is 1 for the max probability
and ln K for the entropy (steps of 1/65535 of the scale). The PNG's text chunks say so:
``confidence`` (max or entropy), ``scale`` (the number) and ``Description``. In Python:
``np.asarray(image, np.float64) / 65535 * float(image.text["scale"])`` with
``image = PIL.Image.open(path)``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from atrous.metrics import confidence_range

FULL_SCALE = 65535
SUFFIXES = ("_confidence.png", "_confidence16.png")
CAPTIONS = {"max": "max probability (1 = certain)", "entropy": "entropy, nats (0 = certain)"}


def confidence_names(stem: str) -> list[str]:
    """The two files written for the input ``stem``: the picture, then the 16-bit values."""
    return [stem + suffix for suffix in SUFFIXES]


def confidence_picture(values: np.ndarray, kind: str, num_classes: int) -> np.ndarray:
    """(H, W) ``confidence(probs, kind)`` values → uint8 (H', W', 3): the coloured map at
    the top left, a labelled colour bar below."""
    from atrous.data.figure import with_colour_bar
    from atrous.data.viridis import apply_colormap, viridis

    low, high = confidence_range(kind, num_classes)
    high_label = "1" if kind == "max" else f"ln {max(num_classes, 2)} = {high:.2f}"
    return with_colour_bar(apply_colormap(values, low, high), viridis(), f"{low:g}", high_label, CAPTIONS[kind])


def confidence16(values: np.ndarray, kind: str, num_classes: int) -> tuple[np.ndarray, PngImagePlugin.PngInfo]:
    """(H, W) ``confidence(probs, kind)`` values → (uint16 (H, W) pixels, the PNG text
    chunks that give their scale): pixel = round(value / scale × 65535)."""
    scale = confidence_range(kind, num_classes)[1]
    pixels = np.clip(np.rint(np.asarray(values, dtype=np.float64) / scale * FULL_SCALE), 0, FULL_SCALE)
    info = PngImagePlugin.PngInfo()
    info.add_text("confidence", kind)
    info.add_text("scale", repr(scale))
    what = "max probability" if kind == "max" else f"entropy in nats of {num_classes} classes"
    scale_text = "1" if kind == "max" else f"ln {max(num_classes, 2)} = {scale!r}"
    info.add_text("Description", f"{what}: value = pixel / {FULL_SCALE} * {scale_text}")
    return pixels.astype(np.uint16), info


def confidence_writers(
    out: Path, stem: str, values: np.ndarray, kind: str, num_classes: int
) -> dict[Path, Callable[[Path], None]]:
    """Writers of ``confidence_names(stem)`` in ``out`` for (H, W) ``values`` (for
    ``atrous.files.write_together``)."""
    picture = Image.fromarray(confidence_picture(values, kind, num_classes))
    pixels, info = confidence16(values, kind, num_classes)
    grey = Image.fromarray(pixels)  # mode I;16: a 16-bit greyscale PNG
    names = confidence_names(stem)
    return {
        out / names[0]: lambda path: picture.save(path, format="PNG"),
        out / names[1]: lambda path: grey.save(path, format="PNG", pnginfo=info),
    }
