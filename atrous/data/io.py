"""Safe reading of images and label masks.

``read_image`` returns the stored pixel grid as 8-bit RGB. Decisions, in the order the
checks run:

* The pixel count is read from the header (PIL opens lazily) and refused above
  ``max_pixels`` *before* any pixel is decoded, so a decompression bomb costs nothing.
  So is an image whose decoding would not fit in the memory this machine has available;
  ``check_images`` checks a whole list of inputs from their headers before any work,
  against the memory segmenting each would need.
* A file the operating system will not open is named with its reason ("permission
  denied", "a broken symbolic link …"), never called a corrupt image.
* The whole file is decoded with ``.load()`` so truncated or corrupt files fail here,
  naming the file, rather than later inside a DataLoader worker.
* Palette ("P"), grayscale ("L", "1"), CMYK, YCbCr and "LA"/"RGBA"/"PA" whose alpha is
  fully opaque are converted to RGB.
* Images with real transparency are refused: dropping alpha exposes whatever colour the
  encoder left under transparent pixels, and compositing needs a background colour only
  the user knows. The message says how to convert explicitly.
* 16-bit and float images ("I;16", "I", "F") are refused: scaling them to 8 bits is a
  choice (linear? window?) the user must make.
* EXIF orientation is applied (``ImageOps.exif_transpose``): a phone photo stored
  sideways is read upright, as every viewer and annotation tool (LabelMe, CVAT) shows
  it, so predictions and the masks drawn on it line up.

``read_mask`` returns class indices as int64, mapped through an optional lookup table,
and refuses values outside ``[0, num_classes) ∪ {ignore_index}``.
"""

from __future__ import annotations

import contextlib
import struct
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from atrous.errors import DataError
from atrous.files import os_problem, read_problem

# 25 megapixels (e.g. 6000×4000): inference on such an image needs a few GB, which a
# laptop has; larger images are refused by name before decoding (raise the limit, or
# downscale). While read_image opens a file PIL's own bomb check is off (the size is
# checked from the header, by name); masks keep it at this limit (PIL refuses twice it
# from the header alone). PIL's setting is restored afterwards.
DEFAULT_MAX_PIXELS = 25_000_000

# Formats PIL recognises but cannot decode by itself (stubs, or Ghostscript needed): a
# folder's .h5 or .eps file is not one of its images.
_UNDECODABLE = {"BUFR", "EPS", "GRIB", "HDF5", "MPEG", "WMF"}
# Peak memory of segmenting an image, per input pixel: uint8 and float32 RGB (15 B),
# 21 classes' float32 probabilities at full size (84 B), labels and pictures (~20 B).
INFERENCE_BYTES_PER_PIXEL = 120
# Decoding alone: the decoded image and its RGB copy, at most 4 + 4 bytes a pixel.
DECODE_BYTES_PER_PIXEL = 8

_CONVERTIBLE = {"RGB", "L", "1", "P", "CMYK", "YCbCr", "LAB", "HSV"}
_WITH_ALPHA = {"RGBA", "LA", "PA", "RGBa", "La"}
_INDEX_MODES = {"L", "P", "1", "I", "I;16", "I;16B", "I;16L", "I;16N"}
_LOSSY_FORMATS = {"JPEG", "MPO", "WEBP"}

LabelMap = Mapping[int, int] | np.ndarray | None
Palette = Sequence[Sequence[int]]


@contextlib.contextmanager
def _bomb_limit(max_pixels: int | None) -> Iterator[None]:
    """PIL's process-wide decompression-bomb limit set to ``max_pixels`` (None: off, for a
    caller that checks the size itself before decoding) for the block, then restored:
    atrous leaves PIL as it found it."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, by name
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _open(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    path = Path(path)
    problem = read_problem(path)
    if problem:
        raise DataError(f"{path}: {problem}")
    try:
        with _bomb_limit(max_pixels):
            return Image.open(path)
    except Image.DecompressionBombError as exc:
        raise DataError(
            f"{path}: too large to read ({exc}); downscale the image, or raise max_pixels (--max-pixels) "
            "if this machine has the memory"
        ) from exc
    except OSError as exc:
        if exc.errno is not None:  # the operating system's refusal, not PIL's verdict on the bytes
            raise DataError(f"{path}: {os_problem(exc, path)}") from None
        if path.stat().st_size == 0:
            raise DataError(f"{path}: an empty file, not an image") from None
        raise DataError(f"{path}: not a readable image ({exc}); re-export it as PNG or JPEG") from exc
    except (SyntaxError, ValueError, struct.error) as exc:
        raise DataError(f"{path}: not a readable image ({exc}); re-export it as PNG or JPEG") from exc


def _decode(image: Image.Image, path: Path) -> None:
    try:
        image.load()
    except OSError as exc:
        if exc.errno is not None:
            raise DataError(f"{path}: {os_problem(exc, path)}") from None
        raise DataError(f"{path}: truncated or corrupt image ({exc}); re-export or remove the file") from exc
    except (SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise DataError(f"{path}: truncated or corrupt image ({exc}); re-export or remove the file") from exc


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) read from the file header only; nothing is decoded."""
    with _open(path) as image:
        width, height = image.size
    return height, width


def image_suffixes() -> tuple[str, ...]:
    """The file suffixes (lower case, with the dot) of every image format PIL decodes:
    what a folder or glob of images is listed by — for prediction and for a dataset's
    images alike — so that it takes every file an explicit path would (.png, .jpg, .bmp,
    .webp, .gif, .tif …)."""
    Image.init()
    return tuple(
        sorted(
            suffix
            for suffix, kind in Image.registered_extensions().items()
            if kind in Image.OPEN and kind not in _UNDECODABLE
        )
    )


def memory_need(width: int, height: int, *, segment: bool = True) -> int:
    """Estimated peak bytes of segmenting one ``width``×``height`` image (the decoded
    pixels, the float input, full-size class probabilities and the pictures written), or
    with ``segment=False`` of decoding it alone."""
    return width * height * (INFERENCE_BYTES_PER_PIXEL if segment else DECODE_BYTES_PER_PIXEL)


def size_problem(width: int, height: int, max_pixels: int, *, segment: bool = True) -> str | None:
    """Why a ``width``×``height`` image (or video frame) cannot be read (``segment``: and
    segmented): above ``max_pixels``, or more memory than this machine has; None if it can."""
    if width * height > max_pixels:
        return (
            f"{width}x{height} = {width * height} pixels exceeds max_pixels={max_pixels} (--max-pixels), a size "
            "that keeps inference and training within a few GB of memory; downscale the image, or raise the "
            "limit if this machine has the memory"
        )
    from atrous.limits import available_memory

    available, need = available_memory(), memory_need(width, height, segment=segment)
    if available and need > available:
        return (
            f"{width}x{height} = {width * height} pixels would need about {need / 1e9:.1f} GB of memory to "
            f"{'segment' if segment else 'decode'}, more than the {available / 1e9:.1f} GB available; downscale the image"
        )
    return None


def _header_problem(image: Image.Image, max_pixels: int, *, segment: bool) -> str | None:
    """Why the opened (not decoded) ``image`` cannot be read (``segment``: and segmented),
    after its name, or None."""
    problem = size_problem(*image.size, max_pixels, segment=segment)
    if problem:
        return problem
    if image.mode not in _CONVERTIBLE and image.mode not in _WITH_ALPHA:
        return (
            f"image mode {image.mode!r} (16-bit, floating point or another non-8-bit layout) is not supported; "
            "convert it to 8-bit RGB (e.g. scale to 0..255 and save with "
            "PIL Image.fromarray(array.astype('uint8')))"
        )
    return None


def check_images(paths: Sequence[str | Path], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Check every image of ``paths`` from its header (readable, a known format, at most
    ``max_pixels``, within this machine's memory, a supported mode) before any work, so a
    bad file late in a list stops a command before its first output, not after.

    Raises one ``DataError`` naming each bad file (the first few) and how many there are.
    """
    problems = []
    for path in paths:
        try:
            with _open(path, max_pixels=None) as image:
                problem = _header_problem(image, max_pixels, segment=True)
            if problem:
                problems.append(f"{path}: {problem}")
        except DataError as error:
            problems.append(str(error))
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        count = (
            f"{len(problems)} of {len(paths)} images cannot be read, so nothing was done: " if len(paths) > 1 else ""
        )
        raise DataError(count + " | ".join(problems[:3]) + more)


def read_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image as uint8 RGB of shape (H, W, 3); see the module docstring for rules.

    Raises ``DataError`` naming the file and the fix for missing, unreadable, oversized
    (pixels or memory), corrupt, transparent, 16-bit or float images.
    """
    path = Path(path)
    with _open(path, max_pixels=None) as image:  # the header only: the size is checked here, by name
        problem = _header_problem(image, max_pixels, segment=False)
        if problem:
            raise DataError(f"{path}: {problem}")
        mode = image.mode
        _decode(image, path)
        if mode == "P" and "transparency" in image.info:
            image, mode = image.convert("RGBA"), "RGBA"
        if mode in _WITH_ALPHA:
            alpha = np.asarray(image.getchannel("A" if "A" in image.getbands() else "a"))
            if alpha.min() < 255:
                raise DataError(
                    f"{path}: image has transparent pixels (alpha < 255 in "
                    f"{int((alpha < 255).sum())} pixels); flatten it explicitly, e.g. "
                    "Image.alpha_composite(Image.new('RGBA', im.size, (255, 255, 255, 255)), "
                    "im).convert('RGB'), or drop alpha with im.convert('RGB')"
                )
        # A phone photo stores its pixels sideways and says so in EXIF: show it upright, as viewers do.
        image = ImageOps.exif_transpose(image)
        # np.array copies: arrays viewing PIL's buffer are read-only, which torch warns about.
        return np.array(image if mode == "RGB" else image.convert("RGB"), dtype=np.uint8)


def _lookup_table(label_map: LabelMap) -> np.ndarray | None:
    if label_map is None:
        return None
    if isinstance(label_map, np.ndarray):
        if label_map.shape != (256,):
            raise DataError(f"label_map array must have shape (256,), got {label_map.shape}")
        return label_map.astype(np.int64)
    table = np.arange(256, dtype=np.int64)
    for raw, mapped in label_map.items():
        table[int(raw)] = int(mapped)
    return table


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """Colours (..., 3) uint8 → one int32 code each, ``r << 16 | g << 8 | b``."""
    rgb = np.asarray(rgb)
    return (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2].astype(np.int32)


def _rgb_text(code: int) -> str:
    return f"({code >> 16}, {(code >> 8) & 255}, {code & 255})"


def _color_table(
    palette: Palette, ignore_colors: Sequence[Sequence[int]], ignore_index: int, table: str
) -> tuple[np.ndarray, np.ndarray]:
    """(colour codes sorted, class of each): ``palette[i]`` → ``i``, ``ignore_colors`` →
    ``ignore_index``; ``DataError`` for a colour given two meanings."""
    codes = pack_rgb(np.asarray([*palette, *ignore_colors], dtype=np.int64).reshape(-1, 3))
    targets = np.array([*range(len(palette)), *[ignore_index] * len(ignore_colors)], dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    codes, targets = codes[order], targets[order]
    clash = np.flatnonzero((codes[1:] == codes[:-1]) & (targets[1:] != targets[:-1]))
    if clash.size:
        first = clash[0]
        meaning = [str(t) if t != ignore_index else "ignore" for t in (targets[first], targets[first + 1])]
        raise DataError(
            f"{table}: colour {_rgb_text(int(codes[first]))} is given to both class {meaning[0]} and {meaning[1]}, "
            "so its pixels cannot be told apart; give every class its own colour"
        )
    return codes, targets


def colors_to_indices(
    rgb: np.ndarray,
    palette: Palette,
    *,
    ignore_index: int,
    ignore_colors: Sequence[Sequence[int]] = (),
    source: str = "mask",
    table: str = "the class palette",
    fix: str = "add each to the classes file (name r g b) or repaint those pixels",
) -> np.ndarray:
    """Map an RGB colour mask (H, W, 3) uint8 to class indices (H, W) int64.

    Pixel colour ``palette[i]`` becomes ``i``; ``ignore_colors`` become ``ignore_index``.
    Vectorised: colours packed into int32 codes, looked up by ``searchsorted`` in the
    sorted table. Any other colour raises one ``DataError`` naming ``source``, the first
    few unknown colours (RGB) and the first pixel (x, y) of each, ``table`` and ``fix``.
    """
    codes = pack_rgb(rgb)
    keys, targets = _color_table(palette, ignore_colors, ignore_index, table)
    unique, inverse = np.unique(codes, return_inverse=True)
    inverse = inverse.reshape(-1)
    at = np.searchsorted(keys, unique).clip(max=max(len(keys) - 1, 0))
    known = keys[at] == unique if len(keys) else np.zeros(len(unique), dtype=bool)
    if not known.all():
        unknown = np.flatnonzero(~known)
        width = codes.shape[1] if codes.ndim == 2 else 1
        shown = []
        for u in unknown[:5]:
            y, x = divmod(int(np.flatnonzero(inverse == u)[0]), width)
            shown.append(f"{_rgb_text(int(unique[u]))} (first at x={x}, y={y})")
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        verb = "is not a class colour" if len(unknown) == 1 else "are not class colours"
        raise DataError(
            f"{source}: colour{'s' if len(unknown) > 1 else ''} {', '.join(shown)}{more} {verb} of {table}; {fix}"
        )
    return targets[at][inverse].reshape(codes.shape)


def read_color_mask(
    path: str | Path,
    palette: Palette,
    *,
    ignore_index: int = 255,
    ignore_colors: Sequence[Sequence[int]] = (),
    table: str = "the class palette",
    fix: str = "add each to the classes file (name r g b) or repaint those pixels",
) -> np.ndarray:
    """Read a colour-coded mask as class indices (H, W) int64: each pixel's colour looked
    up in ``palette`` (and ``ignore_colors``), whatever the PNG stores (RGB, an opaque
    RGBA, a palette image, grey). ``DataError`` names the file and every unknown colour
    with where it was first seen (``colors_to_indices``), and refuses lossy formats.
    """
    path = Path(path)
    with _open_mask(path) as image:
        if image.mode in ("RGBA", "LA", "PA") and np.asarray(image.getchannel("A")).min() < 255:
            raise DataError(
                f"{path}: the colour mask has transparent pixels; save it without transparency (an RGB PNG)"
            )
        if image.mode not in _CONVERTIBLE and image.mode not in _WITH_ALPHA:
            raise DataError(f"{path}: mask mode {image.mode!r} is not an 8-bit colour image; save an RGB PNG")
        rgb = np.asarray(image.convert("RGB"))
    return colors_to_indices(
        rgb, palette, ignore_index=ignore_index, ignore_colors=ignore_colors, source=str(path), table=table, fix=fix
    )


def read_mask(
    path: str | Path,
    *,
    num_classes: int,
    ignore_index: int = 255,
    label_map: LabelMap = None,
    palette: Palette | None = None,
    ignore_colors: Sequence[Sequence[int]] = (),
    table: str = "the class palette",
) -> np.ndarray:
    """Read a label mask as int64 class indices of shape (H, W).

    Accepts single-channel index PNGs ("L", "P" — the palette index is the label —, "1",
    16-bit integer). ``label_map`` (dict raw → class, or a (256,) lookup array) renames
    raw values, e.g. Cityscapes labelIds → trainIds. RGB colour masks are accepted only
    with ``palette`` (colour ``palette[i]`` → class ``i``; ``table``: where the colours
    come from, for the message about a colour not among them). Lossy formats (JPEG) are
    refused because compression changes label values at edges.
    Raises ``DataError`` naming the file, the offending values and the fix.
    """
    path = Path(path)
    with _open_mask(path) as image:
        mode = image.mode
        if mode in ("RGB", "RGBA"):
            if palette is None:
                raise DataError(
                    f"{path}: mask is an {mode} colour image; save masks as single-channel "
                    "8-bit PNGs of class indices, or list each class colour in a classes "
                    "file (name r g b) so colours can be mapped to indices"
                )
            rgb = np.asarray(image.convert("RGB"))
            return colors_to_indices(
                rgb, palette, ignore_index=ignore_index, ignore_colors=ignore_colors, source=str(path), table=table
            )
        raw = _index_array(image, path)
    return _map_and_check(raw, path, num_classes, ignore_index, _lookup_table(label_map))


def mask_values(path: str | Path) -> np.ndarray:
    """The distinct values (sorted) of a single-channel index mask, unchecked against any
    class count; ``DataError`` for colour, lossy or non-index masks."""
    path = Path(path)
    with _open_mask(path) as image:
        if image.mode in ("RGB", "RGBA"):
            raise DataError(
                f"{path}: classes cannot be read from a colour mask; write a classes file "
                "(classes.txt, one 'name r g b' per class) beside images/ and masks/"
            )
        return np.unique(_index_array(image, path))


def _open_mask(path: Path) -> Image.Image:
    """The decoded mask image; lossy formats (JPEG …) refused."""
    image = _open(path)
    try:
        if image.format in _LOSSY_FORMATS:
            raise DataError(
                f"{path}: masks must be lossless (got {image.format}, whose compression "
                "changes label values along edges); save masks as PNG"
            )
        _decode(image, path)
    except BaseException:
        image.close()
        raise
    return image


def _index_array(image: Image.Image, path: Path) -> np.ndarray:
    if image.mode not in _INDEX_MODES:
        raise DataError(
            f"{path}: mask mode {image.mode!r} is not a class-index image; save masks as "
            "single-channel 8-bit PNGs whose pixel values are class indices"
        )
    return np.asarray(image)


def _map_and_check(
    raw: np.ndarray, path: Path, num_classes: int, ignore_index: int, table: np.ndarray | None
) -> np.ndarray:
    def invalid(values: np.ndarray) -> np.ndarray:
        return ((values < 0) | (values >= num_classes)) & (values != ignore_index)

    if raw.dtype == np.uint8:  # the common case: validate the 256 possible values, not every pixel
        table = np.arange(256, dtype=np.int64) if table is None else table
        present = np.bincount(raw.ravel(), minlength=256) > 0
        bad_values = np.flatnonzero(present & invalid(table))
        mask = table[raw]
    else:
        raw = raw.astype(np.int64)
        if table is not None:
            if raw.min(initial=0) < 0 or raw.max(initial=0) > 255:
                raise DataError(f"{path}: mask values outside 0..255 cannot be mapped by label_map")
            mask = table[raw]
        else:
            mask = raw
        bad = invalid(mask)
        bad_values = np.unique(raw[bad]) if bad.any() else np.empty(0, dtype=np.int64)
    if bad_values.size:
        shown = ", ".join(str(v) for v in bad_values[:10]) + (" …" if len(bad_values) > 10 else "")
        raise DataError(
            f"{path}: mask values {shown} are outside [0, {num_classes}) and not the ignore "
            f"index {ignore_index}; fix the mask, set num_classes to cover them, or map them "
            "to the ignore index"
        )
    return mask


def check_mask_array(mask: np.ndarray, *, num_classes: int, ignore_index: int, source: str) -> np.ndarray:
    """Validate an in-memory (H, W) integer mask the same way ``read_mask`` does → int64."""
    return _map_and_check(np.asarray(mask), Path(source), num_classes, ignore_index, None)
