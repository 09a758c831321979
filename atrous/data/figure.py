"""Side-by-side figures that explain themselves: titled tiles and a legend of class colours."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

Color = tuple[int, int, int]
_GAP = 6
_FONT_SIZE = 14


def _font(size: int = _FONT_SIZE) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def titled_grid(
    rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str], legend: Sequence[tuple[str, Color]] = ()
) -> np.ndarray:
    """Rows of uint8 (H, W_i, 3) tiles under one title per column, above a colour legend.

    Every row holds tiles of the same widths column by column (e.g. one image and its
    predictions); ``legend``: (class name, RGB) pairs, drawn as swatches, wrapped to the
    figure's width. Returns uint8 (H', W', 3) on a white background.
    """
    font = _font()
    title_h = _FONT_SIZE + 2 * _GAP
    widths = [max(row[c].shape[1] for row in rows if c < len(row)) for c in range(max(len(row) for row in rows))]
    heights = [max(tile.shape[0] for tile in row) for row in rows]
    width = sum(widths) + _GAP * (len(widths) + 1)
    legend_rows = _legend_rows(legend, width, font)
    legend_h = len(legend_rows) * (_FONT_SIZE + _GAP) + (_GAP if legend_rows else 0)
    body_h = sum(heights) + _GAP * len(heights)
    canvas = Image.new("RGB", (width, title_h + body_h + legend_h), "white")
    draw = ImageDraw.Draw(canvas)
    x = _GAP
    for width_c, title in zip(widths, titles):
        text, title_font = _fit(title, width_c - 2)
        draw.text((x + 2, _GAP), text, fill=(20, 20, 20), font=title_font)
        x += width_c + _GAP
    y = title_h
    for row, height in zip(rows, heights):
        x = _GAP
        for tile, width_c in zip(row, widths):
            canvas.paste(Image.fromarray(np.ascontiguousarray(tile)), (x, y))
            x += width_c + _GAP
        y += height + _GAP
    for legend_row in legend_rows:
        for left, name, color in legend_row:
            draw.rectangle(
                (left, y + 1, left + _FONT_SIZE - 2, y + _FONT_SIZE - 1), fill=tuple(color), outline=(60, 60, 60)
            )
            draw.text((left + _FONT_SIZE + 2, y), name, fill=(20, 20, 20), font=font)
        y += _FONT_SIZE + _GAP
    return np.asarray(canvas)


def _fit(text: str, width: int, smallest: int = 9) -> tuple[str, ImageFont.ImageFont]:
    """``text`` and a font that fit ``width`` pixels: a smaller size first, then an ellipsis,
    so a title never runs into the next column's."""
    for size in range(_FONT_SIZE, smallest - 1, -1):
        font = _font(size)
        if font.getlength(text) <= width:
            return text, font
    while len(text) > 1 and font.getlength(text + "…") > width:
        text = text[:-1]
    return text.rstrip() + "…", font


def _legend_rows(
    legend: Sequence[tuple[str, Color]], width: int, font: ImageFont.ImageFont
) -> list[list[tuple[int, str, Color]]]:
    """Place (name, colour) entries left to right, starting a new row when one is full."""
    rows: list[list[tuple[int, str, Color]]] = []
    x = width  # forces a first row
    for name, color in legend:
        entry = _FONT_SIZE + 4 + int(font.getlength(name)) + 3 * _GAP
        if x + entry > width:
            rows.append([])
            x = _GAP
        rows[-1].append((x, name, color))
        x += entry
    return rows


def present_classes(
    masks: Sequence[np.ndarray], names: Sequence[str], palette: Sequence[Sequence[int]]
) -> list[tuple[str, Color]]:
    """(name, colour) of every class that occurs in any of ``masks`` (H, W), in class order."""
    found = sorted({int(v) for mask in masks for v in np.unique(mask) if 0 <= int(v) < len(palette)})
    return [(names[i] if i < len(names) else str(i), tuple(int(c) for c in palette[i])) for i in found]
