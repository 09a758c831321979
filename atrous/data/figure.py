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


def with_colour_bar(
    picture: np.ndarray, colours: np.ndarray, low_label: str, high_label: str, caption: str
) -> np.ndarray:
    """``picture`` uint8 (H, W, 3) above a colour bar: ``colours`` (N, 3) uint8 left (low
    end) to right, ``low_label`` under its left end, ``high_label`` under its right end,
    ``caption`` between them. The picture keeps its pixels at the top left; the figure is
    at least 260 pixels wide. Returns uint8 (H', W', 3) on a white background."""
    font = _font(12)
    height, width = picture.shape[:2]
    canvas_w = max(width, 260)
    bar_h = 12
    canvas = Image.new("RGB", (canvas_w, height + _GAP + bar_h + _GAP + _FONT_SIZE + _GAP), "white")
    canvas.paste(Image.fromarray(np.ascontiguousarray(picture)), (0, 0))
    left, right = _GAP, canvas_w - _GAP
    ramp = np.asarray(colours, dtype=np.uint8)[np.linspace(0, len(colours) - 1, right - left).round().astype(int)]
    canvas.paste(Image.fromarray(np.repeat(ramp[None], bar_h, axis=0)), (left, height + _GAP))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((left - 1, height + _GAP - 1, right, height + _GAP + bar_h), outline=(60, 60, 60))
    y = height + 2 * _GAP + bar_h
    draw.text((left, y), low_label, fill=(20, 20, 20), font=font)
    high_w = int(font.getlength(high_label))
    draw.text((right - high_w, y), high_label, fill=(20, 20, 20), font=font)
    room = right - left - int(font.getlength(low_label)) - high_w - 4 * _GAP
    text, caption_font = _fit(caption, max(room, 1))
    if room > 0:
        middle = (left + right - int(caption_font.getlength(text))) // 2
        draw.text((middle, y), text, fill=(20, 20, 20), font=caption_font)
    return np.asarray(canvas)


_ACCURACY = (31, 119, 180)
_GAP_FILL = (214, 39, 40, 110)
_DIAGONAL = (255, 127, 14)
_PLOT = 400  # side of the reliability plot in pixels
_HISTOGRAM = 90  # height of the pixels-per-bin panel


def reliability_diagram(calibration: dict, title: str = "") -> np.ndarray:
    """A reliability diagram of ``calibration`` (``atrous.metrics.CalibrationBins.compute()``'s
    dict): per confidence bin, the accuracy (bar) against the mean confidence (the gap
    shaded red; the diagonal is perfect calibration), the ECE in the heading, and below,
    each bin's share of the pixels. Returns uint8 (H, W, 3) on a white background."""
    font, small = _font(12), _font(10)
    left, top = 58, 2 * _FONT_SIZE + 3 * _GAP
    right, bottom = left + _PLOT, top + _PLOT
    hist_top, hist_bottom = bottom + 60, bottom + 60 + _HISTOGRAM
    canvas = Image.new("RGBA", (right + 24, hist_bottom + 44), "white")
    draw = ImageDraw.Draw(canvas)
    ece = calibration.get("ece")
    heading = f"ECE {100 * ece:.2f} %" if ece is not None and ece == ece else "ECE n/a (no labelled pixel)"
    heading += f" over {calibration.get('pixels', 0):,} labelled pixels, {len(calibration['bins'])} bins"
    if title:
        text, title_font = _fit(title, right - left)
        draw.text((left, _GAP), text, fill=(20, 20, 20), font=title_font)
    draw.text((left, _GAP + _FONT_SIZE + _GAP), heading, fill=(20, 20, 20), font=font)

    def x_of(value: float) -> float:
        return left + value * _PLOT

    def y_of(value: float, low: int = bottom, span: int = _PLOT) -> float:
        return low - value * span

    for tick in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        draw.line((left, y_of(tick), right, y_of(tick)), fill=(230, 230, 230))
        draw.text((left - 30, y_of(tick) - 7), f"{tick:.1f}", fill=(20, 20, 20), font=font)
        draw.text((x_of(tick) - 9, bottom + 4), f"{tick:.1f}", fill=(20, 20, 20), font=font)
    bins = calibration["bins"]
    for row in bins:
        if row["pixels"]:
            draw.rectangle(
                (x_of(row["low"]) + 1, y_of(row["accuracy"]), x_of(row["high"]) - 1, bottom),
                fill=_ACCURACY,
                outline=(20, 60, 110),
            )
    gaps = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    gap_draw = ImageDraw.Draw(gaps)
    for row in bins:
        if row["pixels"]:
            upper, lower = sorted((row["accuracy"], row["confidence"]), reverse=True)
            gap_draw.rectangle(
                (x_of(row["low"]) + 1, y_of(upper), x_of(row["high"]) - 1, y_of(lower)),
                fill=_GAP_FILL,
                outline=(214, 39, 40, 255),
            )
    canvas = Image.alpha_composite(canvas, gaps)
    draw = ImageDraw.Draw(canvas)
    for step in range(0, _PLOT, 10):  # the diagonal, dashed, in a colour that shows on bars, gaps and white
        draw.line((left + step, bottom - step, left + step + 5, bottom - step - 5), fill=_DIAGONAL, width=2)
    draw.rectangle((left, top, right, bottom), outline=(0, 0, 0))
    draw.text((left + (_PLOT - 170) // 2, bottom + 24), "confidence (max probability)", fill=(20, 20, 20), font=font)
    _vertical_text(canvas, "accuracy", (6, (top + bottom) // 2), font)
    legend_y = top + 8
    for colour, name in ((_ACCURACY, "accuracy in the bin"), (_GAP_FILL, "gap to its mean confidence")):
        draw.rectangle((left + 8, legend_y + 2, left + 20, legend_y + 12), fill=colour, outline=(60, 60, 60))
        draw.text((left + 26, legend_y), name, fill=(20, 20, 20), font=font)
        legend_y += 16
    draw.line((left + 8, legend_y + 11, left + 20, legend_y + 3), fill=_DIAGONAL, width=2)
    draw.text((left + 26, legend_y), "perfect calibration", fill=(20, 20, 20), font=font)

    total = max(sum(row["pixels"] for row in bins), 1)
    shares = [row["pixels"] / total for row in bins]
    peak = max(shares) or 1.0
    draw.text((left, hist_top - 16), "pixels per bin (% of all)", fill=(20, 20, 20), font=font)
    for row, share in zip(bins, shares):
        if share:
            y = y_of(share / peak, hist_bottom, _HISTOGRAM - 14)
            draw.rectangle((x_of(row["low"]) + 1, y, x_of(row["high"]) - 1, hist_bottom), fill=(150, 150, 150))
            label = f"{100 * share:.0f}" if share >= 0.005 else "<1"
            draw.text((x_of(row["low"]) + 2, y - 12), label, fill=(20, 20, 20), font=small)
    draw.rectangle((left, hist_top, right, hist_bottom), outline=(0, 0, 0))
    for tick in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        draw.text((x_of(tick) - 9, hist_bottom + 4), f"{tick:.1f}", fill=(20, 20, 20), font=font)
    return np.asarray(canvas.convert("RGB"))


def _vertical_text(canvas: Image.Image, text: str, centre: tuple[int, int], font: ImageFont.ImageFont) -> None:
    """Draw ``text`` turned 90° (reading upwards) centred on ``centre``."""
    width = int(font.getlength(text)) + 2
    label = Image.new("RGBA", (width, _FONT_SIZE + 2), (255, 255, 255, 0))
    ImageDraw.Draw(label).text((1, 0), text, fill=(20, 20, 20, 255), font=font)
    turned = label.rotate(90, expand=True)
    canvas.alpha_composite(turned, (centre[0], centre[1] - turned.height // 2))
