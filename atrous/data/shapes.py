"""Synthetic shapes: a segmentation task generated on the fly, for demos and tests.

Each image is a low-contrast textured background (smooth noise, a gradient or soft
stripes) with 2–5 filled, high-contrast, barely overlapping shapes (fewer when no room
is left). Class 0 is background, then one class per shape type (circle,
rectangle, triangle, ring, cross). Shape and background colours are drawn from the same
distribution for every class, so the class is told by form, not colour; rectangles,
triangles and crosses are rotated at random. Item ``i`` of split ``s`` is a pure
function of ``(seed, s, i)``, and the splits never share an item.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import lru_cache

import numpy as np

from atrous.data.base import SegmentationDataset, Transform, check_split, register_dataset
from atrous.errors import ConfigError

logger = logging.getLogger(__name__)

SHAPE_TYPES = ("circle", "rectangle", "triangle", "ring", "cross")
SHAPES_PALETTE = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48)]
DEFAULT_LENGTHS = {"train": 512, "val": 64, "test": 64}
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
# Backgrounds vary by at most ±_BG_SPREAD per channel around one colour, and a shape
# differs from the background under it by at least _MIN_CONTRAST (RGB distance): texture
# edges stay weaker than shape edges, which keeps the task learnable in minutes.
_BG_SPREAD = 60.0
_MIN_CONTRAST = 100.0


@lru_cache(maxsize=8)
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return ys, xs


@lru_cache(maxsize=16)
def _upsample_matrix(out_size: int, in_size: int) -> np.ndarray:
    """(out, in) matrix of linear interpolation weights (align_corners=True)."""
    positions = np.linspace(0, in_size - 1, out_size, dtype=np.float32)
    low = np.minimum(np.floor(positions).astype(int), in_size - 2)
    frac = positions - low
    matrix = np.zeros((out_size, in_size), dtype=np.float32)
    matrix[np.arange(out_size), low] = 1 - frac
    matrix[np.arange(out_size), low + 1] = frac
    return matrix


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    kind = rng.integers(3)
    base = rng.uniform(0, 255, 3).astype(np.float32)
    if kind == 0:  # smooth colour noise: a coarse random grid, bilinearly upsampled
        grid_shape = (int(rng.integers(3, 7)), int(rng.integers(3, 7)), 3)
        cells = base + rng.uniform(-_BG_SPREAD, _BG_SPREAD, size=grid_shape).astype(np.float32)
        rows, cols = _upsample_matrix(height, cells.shape[0]), _upsample_matrix(width, cells.shape[1])
        return np.einsum("hi,ijc,wj->hwc", rows, cells, cols, optimize=True)
    low, high = base, base + rng.uniform(-_BG_SPREAD, _BG_SPREAD, 3).astype(np.float32)
    angle = rng.uniform(0, np.pi)
    # Position along the direction `angle`, as a row part plus a column part (cheap outer sums).
    along_y = np.arange(height, dtype=np.float32)[:, None] * np.float32(np.sin(angle))
    along_x = np.arange(width, dtype=np.float32)[None, :] * np.float32(np.cos(angle))
    if kind == 1:  # linear gradient between two colours
        span = abs(np.sin(angle)) * (height - 1) + abs(np.cos(angle)) * (width - 1)
        t = (along_y + along_x - (along_y.min() + along_x.min())) / max(span, 1.0)
    else:  # soft stripes: sin(a + b) = sin a cos b + cos a sin b keeps it separable
        omega = np.float32(2 * np.pi / (rng.uniform(0.08, 0.25) * min(height, width)))
        a, b = along_y * omega + np.float32(rng.uniform(0, 2 * np.pi)), along_x * omega
        t = 0.5 + 0.5 * (np.sin(a) * np.cos(b) + np.cos(a) * np.sin(b))
    return low + t[..., None] * (high - low)


def _shape_mask(
    kind: str, ys: np.ndarray, xs: np.ndarray, cy: float, cx: float, r: float, rng: np.random.Generator
) -> np.ndarray:
    dy, dx = ys - cy, xs - cx
    if kind in ("circle", "ring"):
        d2 = dy * dy + dx * dx
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2 if kind == "ring" else True)
    angle = rng.uniform(0, 2 * np.pi)
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    if kind == "rectangle":
        aspect = rng.uniform(0.45, 1.0)
        return (np.abs(u) <= r) & (np.abs(v) <= r * aspect)
    if kind == "cross":
        half = 0.2 * r
        return ((np.abs(u) <= r) & (np.abs(v) <= half)) | ((np.abs(v) <= r) & (np.abs(u) <= half))
    # triangle: inside all three edges of a jittered, roughly equilateral triangle
    corners = angle + np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.3, 0.3, 3)
    px, py = r * np.cos(corners), r * np.sin(corners)
    inside = np.ones_like(u, dtype=bool)
    for i in range(3):
        j = (i + 1) % 3
        inside &= (px[j] - px[i]) * (dy - py[i]) - (py[j] - py[i]) * (dx - px[i]) >= 0
    return inside


def _contrasting_color(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    for _ in range(8):
        color = rng.uniform(0, 255, 3).astype(np.float32)
        if np.linalg.norm(color - under) >= _MIN_CONTRAST:
            return color
    return (255.0 - under).astype(np.float32)


def make_shapes_sample(
    rng: np.random.Generator, height: int, width: int, num_shape_types: int
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic sample: image uint8 (H, W, 3) and mask uint8 (H, W) with classes
    0 (background) .. ``num_shape_types``."""
    image = _background(rng, height, width)
    mask = np.zeros((height, width), dtype=np.uint8)
    ys, xs = _grid(height, width)
    side = min(height, width)
    placed = np.empty((0, 3), dtype=np.float64)  # (cy, cx, r) of the shapes drawn so far
    for _ in range(int(rng.integers(2, 6))):
        label = int(rng.integers(1, num_shape_types + 1))
        kind = SHAPE_TYPES[label - 1]
        # Eight candidate placements at once; the first whose disc stays (nearly) clear of
        # the others wins. Occlusion hides form, the only cue to the class.
        r = rng.uniform(0.15, 0.28, 8) * side
        cy, cx = rng.uniform(r * 0.6, height - r * 0.6), rng.uniform(r * 0.6, width - r * 0.6)
        gaps = np.hypot(cy[:, None] - placed[:, 0], cx[:, None] - placed[:, 1]) - 0.85 * (r[:, None] + placed[:, 2])
        free = np.flatnonzero((gaps >= 0).all(axis=1))
        if free.size == 0:
            continue  # no room left: draw fewer shapes
        r, cy, cx = r[free[0]], cy[free[0]], cx[free[0]]
        placed = np.vstack([placed, (cy, cx, r)])
        reach = r * (1.42 if kind == "rectangle" else 1.0)  # a rotated rectangle's corners reach r·√2
        top, left = max(int(cy - reach) - 1, 0), max(int(cx - reach) - 1, 0)
        box = np.s_[top : int(cy + reach) + 2, left : int(cx + reach) + 2]
        inside = _shape_mask(kind, ys[box], xs[box], cy, cx, r, rng)
        window = image[box]
        color = _contrasting_color(rng, window[inside].mean(axis=0))
        shading = rng.uniform(-25, 25, 3).astype(np.float32)  # a gentle vertical colour ramp
        window[inside] = color + shading * ((ys[box][inside] - cy) / r)[:, None]
        mask[box][inside] = label
    # Grey pixel grain, coarse on the background (std ≈ 11.5) and fine on shapes (≈ 3.5):
    # a local cue for shape vs background, while the class still needs the whole form.
    # Uniform rather than Gaussian noise: as good here and several times cheaper.
    grain = np.where(mask > 0, np.float32(12.0), np.float32(40.0))[..., None]
    image += (rng.random((height, width, 1), dtype=np.float32) - 0.5) * grain
    return np.clip(image, 0, 255).astype(np.uint8), mask


@register_dataset("shapes")
class ShapesDataset(SegmentationDataset):
    """Procedural shapes on textured backgrounds (no files); see the module docstring.

    ``num_classes`` is 2..6 (background + up to five shape types); ``size`` is an int
    or (height, width); ``num_images`` defaults to 512 for train and 64 for val/test.
    """

    needs_root = False  # generated: built as ShapesDataset(split, ...)

    splits = tuple(DEFAULT_LENGTHS)

    def __init__(
        self,
        split: str = "train",
        *,
        transform: Transform | None = None,
        num_images: int | None = None,
        size: int | tuple[int, int] = 128,
        num_classes: int = 4,
        seed: int = 0,
        ignore_index: int = 255,
    ) -> None:
        check_split(split, self.splits, "shapes")
        if not 2 <= num_classes <= len(SHAPE_TYPES) + 1:
            raise ConfigError(f"shapes num_classes must be in 2..{len(SHAPE_TYPES) + 1}, got {num_classes}")
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        if min(height, width) < 16:
            raise ConfigError(f"shapes size must be at least 16x16, got {height}x{width}")
        length = DEFAULT_LENGTHS[split] if num_images is None else num_images
        if length < 1:
            raise ConfigError(f"num_images must be >= 1, got {length}")
        self.height, self.width, self.length, self.seed = int(height), int(width), int(length), int(seed)
        super().__init__(
            [],
            split=split,
            class_names=("background",) + SHAPE_TYPES[: num_classes - 1],
            palette=SHAPES_PALETTE,
            ignore_index=ignore_index,
            transform=transform,
        )

    def __len__(self) -> int:
        return self.length

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, _SPLIT_CODES[self.split], index])
        image, mask = make_shapes_sample(rng, self.height, self.width, self.num_classes - 1)
        return image, mask.astype(np.int64)

    def masks(self) -> Iterator[np.ndarray]:
        for index in range(self.length):
            yield self.load(index)[1]
