"""The training curve of a run as a PNG: train loss and val mIoU per epoch, from ``log.csv``.

Drawn with Pillow (already a dependency) so every run gets its picture without
matplotlib: two panels side by side, each with its own y range, ticks and labels.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from atrous.errors import DataError
from atrous.files import atomic_path

PANEL = (460, 300)  # width, height of one panel in pixels
MARGIN = (56, 24, 16, 40)  # left, top, right, bottom
COLORS = {"train loss": (31, 119, 180), "val mIoU (%)": (214, 39, 40)}
# A PNG text chunk every curve carries: what proves to ``train --overwrite`` that a run's
# curve.png is one atrous drew (a user's own picture of that name is never deleted).
MARK_KEY, MARK_VALUE = "atrous", "training curve"


def read_curve(csv_path: str | Path) -> dict[str, list[tuple[float, float]]]:
    """``log.csv`` → {"train loss": [(epoch, loss)], "val mIoU (%)": [(epoch, miou·100)]}."""
    path = Path(csv_path)
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise DataError(f"cannot read training log {path}: {error.strerror}") from None
    series: dict[str, list[tuple[float, float]]] = {name: [] for name in COLORS}
    for row in rows:
        try:
            epoch = float(row["epoch"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path} is not an atrous log.csv (no numeric 'epoch' column)") from None
        for name, key, scale in (("train loss", "train_loss", 1.0), ("val mIoU (%)", "val_miou", 100.0)):
            text = row.get(key) or ""
            if text.strip():
                series[name].append((epoch, float(text) * scale))
    return series


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [low, high]."""
    if not high > low:
        high = low + 1.0
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if raw <= m * step)
    first = math.floor(low / step) * step
    return [first + i * step for i in range(int(math.ceil((high - first) / step)) + 1)]


def _panel(
    draw: ImageDraw.ImageDraw,
    origin: tuple[int, int],
    title: str,
    points: Sequence[tuple[float, float]],
    x_range: tuple[float, float],
    color: tuple[int, int, int],
    font: ImageFont.ImageFont,
) -> None:
    ox, oy = origin
    left, top, right, bottom = ox + MARGIN[0], oy + MARGIN[1], ox + PANEL[0] - MARGIN[2], oy + PANEL[1] - MARGIN[3]
    draw.text((left, oy + 4), title, fill=(0, 0, 0), font=font)
    if not points:
        draw.rectangle((left, top, right, bottom), outline=(0, 0, 0))
        draw.text((left + 8, top + 8), "no values yet", fill=(120, 120, 120), font=font)
        return
    values = [v for _, v in points]
    y_ticks = _nice_ticks(min(values), max(values))
    x_ticks = _nice_ticks(*x_range)
    y_low, y_high = y_ticks[0], y_ticks[-1]
    x_low, x_high = x_ticks[0], x_ticks[-1]

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        px = left + (x - x_low) / (x_high - x_low) * (right - left)
        py = bottom - (y - y_low) / (y_high - y_low) * (bottom - top)
        return px, py

    for tick in y_ticks:
        _, py = to_pixel(x_low, tick)
        draw.line((left, py, right, py), fill=(225, 225, 225))
        draw.text((ox + 4, py - 6), f"{tick:g}", fill=(0, 0, 0), font=font)
    for tick in x_ticks:
        px, _ = to_pixel(tick, y_low)
        draw.text((px - 6, bottom + 4), f"{tick:g}", fill=(0, 0, 0), font=font)
    draw.text(((left + right) // 2 - 15, bottom + 20), "epoch", fill=(0, 0, 0), font=font)
    draw.rectangle((left, top, right, bottom), outline=(0, 0, 0))
    pixels = [to_pixel(x, y) for x, y in points]
    if len(pixels) > 1:
        draw.line(pixels, fill=color, width=2)
    for px, py in pixels:
        draw.ellipse((px - 2.5, py - 2.5, px + 2.5, py + 2.5), fill=color)


def plot_training_curve(csv_path: str | Path, png_path: str | Path, *, title: str | None = None) -> Path:
    """Draw ``log.csv``'s loss and mIoU per epoch into ``png_path`` (written atomically)."""
    image = draw_training_curve(csv_path, title=title)
    out = Path(png_path)
    info = PngInfo()
    info.add_text(MARK_KEY, MARK_VALUE)
    with atomic_path(out) as temp:
        image.save(temp, format="PNG", pnginfo=info)
    return out


def draw_training_curve(csv_path: str | Path, *, title: str | None = None) -> Image.Image:
    """The picture :func:`plot_training_curve` writes, as an RGB image."""
    series = read_curve(csv_path)
    epochs = [x for points in series.values() for x, _ in points]
    x_range = (min(epochs, default=0.0), max(epochs, default=1.0))
    header = 20 if title else 0
    image = Image.new("RGB", (PANEL[0] * len(series), PANEL[1] + header), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    if title:
        draw.text((MARGIN[0], 4), title, fill=(0, 0, 0), font=font)
    for index, (name, points) in enumerate(series.items()):
        _panel(draw, (index * PANEL[0], header), name, points, x_range, COLORS[name], font)
    return image


def is_training_curve(path: str | Path, log: str | Path | None = None) -> bool:
    """Whether ``path`` is a PNG that :func:`plot_training_curve` drew: its text chunk says
    so, or (a curve drawn before curves carried it) its pixels are those ``log`` (the run's
    ``log.csv``) draws."""
    try:
        with Image.open(path) as image:
            if image.format != "PNG":
                return False
            if image.info.get(MARK_KEY) == MARK_VALUE:
                return True
            if log is None or image.size != (PANEL[0] * len(COLORS), PANEL[1]):
                return False
            return image.convert("RGB").tobytes() == draw_training_curve(log).tobytes()
    except (OSError, ValueError, DataError, Image.DecompressionBombError):
        return False
