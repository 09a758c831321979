"""read_image / read_mask: what is converted, what is refused, and the messages."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atrous.data import image_size, read_image, read_mask
from atrous.errors import DataError

RNG = np.random.default_rng(0)


def _rgb(h: int = 6, w: int = 5) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height but holds almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )
    return path


# --- images: converted -----------------------------------------------------------------


def test_rgb_png_and_jpeg_round_trip(tmp_path: Path) -> None:
    pixels = _rgb()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (6, 5, 3) and out.flags.writeable
    np.testing.assert_array_equal(out, pixels)
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=95)
    assert read_image(tmp_path / "a.jpg").shape == (6, 5, 3)


def test_grayscale_is_replicated(tmp_path: Path) -> None:
    gray = RNG.integers(0, 256, (4, 7), dtype=np.uint8)
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (4, 7, 3)
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], gray)


def test_palette_image_is_expanded(tmp_path: Path) -> None:
    index = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    image = Image.fromarray(index, mode="P")
    image.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90] + [0] * (256 * 3 - 9))
    image.save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    np.testing.assert_array_equal(out[1, 0], [70, 80, 90])
    np.testing.assert_array_equal(out[0, 1], [40, 50, 60])


def test_opaque_alpha_is_dropped(tmp_path: Path) -> None:
    pixels = _rgb()
    rgba = np.concatenate([pixels, np.full((6, 5, 1), 255, np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), pixels)
    la = np.stack([pixels[..., 0], np.full((6, 5), 255, np.uint8)], axis=2)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png")[..., 2], pixels[..., 0])


def test_cmyk_is_converted(tmp_path: Path) -> None:
    Image.new("CMYK", (5, 4), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    out = read_image(tmp_path / "c.jpg")
    assert out.shape == (4, 5, 3)
    assert out[..., 0].min() > 200 and out[..., 1].max() < 60  # red


# --- images: refused -------------------------------------------------------------------


def test_real_transparency_is_refused(tmp_path: Path) -> None:
    rgba = np.concatenate([_rgb(), np.full((6, 5, 1), 255, np.uint8)], axis=2)
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "t.png")
    with pytest.raises(DataError, match=r"t\.png.*transparent.*convert\('RGB'\)"):
        read_image(tmp_path / "t.png")


def test_palette_with_transparent_index_is_refused(tmp_path: Path) -> None:
    image = Image.fromarray(np.array([[0, 1]], dtype=np.uint8), mode="P")
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.save(tmp_path / "pt.png", transparency=0)
    with pytest.raises(DataError, match="transparent"):
        read_image(tmp_path / "pt.png")


@pytest.mark.parametrize(
    ("name", "array"),
    [("deep.png", np.full((4, 4), 40000, np.uint16)), ("float.tif", np.full((4, 4), 0.5, np.float32))],
)
def test_16_bit_and_float_are_refused(tmp_path: Path, name: str, array: np.ndarray) -> None:
    Image.fromarray(array).save(tmp_path / name)
    with pytest.raises(DataError, match=rf"{name}.*8-bit RGB"):
        read_image(tmp_path / name)


def test_truncated_file_is_refused_with_its_name(tmp_path: Path) -> None:
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.png: truncated or corrupt"):
        read_image(tmp_path / "cut.png")


def test_garbage_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"junk\.png: not a readable image"):
        read_image(tmp_path / "junk.png")
    with pytest.raises(DataError, match="no such file"):
        read_image(tmp_path / "absent.png")


def test_pixel_cap_is_checked_before_decoding(tmp_path: Path) -> None:
    # The header claims 3000x2000 but holds no real data: decoding would fail as
    # "truncated", so a max_pixels message proves nothing was decoded.
    path = _png_header_only(tmp_path / "big.png", 3000, 2000)
    assert image_size(path) == (2000, 3000)  # (H, W) from the header alone
    with pytest.raises(DataError, match=r"big\.png: 3000x2000 = 6000000 pixels exceeds max_pixels=1000000"):
        read_image(path, max_pixels=1_000_000)
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_image(path, max_pixels=10_000_000)


def test_decompression_bomb_header_is_refused(tmp_path: Path) -> None:
    path = _png_header_only(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(DataError, match=r"bomb\.png"):
        read_image(path)


def test_a_raised_cap_passes_pils_own_limit_and_leaves_it_as_it_was(tmp_path: Path) -> None:
    # 200 megapixels: beyond twice PIL's default limit, so PIL alone would refuse the header.
    path = _png_header_only(tmp_path / "wide.png", 20_000, 10_000)
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(DataError, match="truncated or corrupt"):  # reached decoding: the cap let it through
        read_image(path, max_pixels=300_000_000)
    with pytest.raises(DataError, match=r"wide\.png: 20000x10000 = 200000000 pixels exceeds max_pixels=25000000"):
        read_image(path)
    assert Image.MAX_IMAGE_PIXELS == before  # a library leaves PIL's process-wide setting alone


def test_real_image_over_a_small_cap(tmp_path: Path) -> None:
    Image.fromarray(_rgb(40, 50)).save(tmp_path / "m.png")
    with pytest.raises(DataError, match="50x40 = 2000 pixels exceeds max_pixels=1999"):
        read_image(tmp_path / "m.png", max_pixels=1999)
    assert read_image(tmp_path / "m.png", max_pixels=2000).shape == (40, 50, 3)


# --- masks -----------------------------------------------------------------------------


def test_index_masks_l_and_p(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 2], [255, 2, 1]], dtype=np.uint8)
    Image.fromarray(labels, mode="L").save(tmp_path / "l.png")
    out = read_mask(tmp_path / "l.png", num_classes=3)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, labels)
    palette_mask = Image.fromarray(labels, mode="P")
    palette_mask.putpalette([255, 0, 0] * 256)  # colours irrelevant: the index is the label
    palette_mask.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "p.png", num_classes=3), labels)


def test_out_of_range_values_are_named(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 1, 7, 9]], dtype=np.uint8)).save(tmp_path / "bad.png")
    with pytest.raises(DataError, match=r"bad\.png: mask values 7, 9 are outside \[0, 3\).*ignore index 255"):
        read_mask(tmp_path / "bad.png", num_classes=3)


def test_label_map_and_16_bit_mask(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 5, 11]], dtype=np.uint8)).save(tmp_path / "m.png")
    out = read_mask(tmp_path / "m.png", num_classes=6, label_map={11: 255})
    np.testing.assert_array_equal(out, [[0, 5, 255]])
    Image.fromarray(np.array([[1, 2]], dtype=np.uint16)).save(tmp_path / "m16.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m16.png", num_classes=3), [[1, 2]])


def test_rgb_mask_needs_a_palette(tmp_path: Path) -> None:
    colours = np.array([[[0, 0, 0], [255, 0, 0]], [[0, 255, 0], [9, 9, 9]]], dtype=np.uint8)
    Image.fromarray(colours).save(tmp_path / "c.png")
    with pytest.raises(DataError, match=r"c\.png: mask is an RGB colour image.*classes file"):
        read_mask(tmp_path / "c.png", num_classes=3)
    with pytest.raises(
        DataError, match=r"c\.png: colour \(9, 9, 9\) \(first at x=1, y=1\) is not a class colour of the class palette"
    ):
        read_mask(tmp_path / "c.png", num_classes=3, palette=[(0, 0, 0), (255, 0, 0), (0, 255, 0)])
    out = read_mask(
        tmp_path / "c.png", num_classes=3, palette=[(0, 0, 0), (255, 0, 0), (0, 255, 0)], ignore_colors=[(9, 9, 9)]
    )
    np.testing.assert_array_equal(out, [[0, 1], [2, 255]])


def test_lossy_mask_is_refused(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "m.jpg")
    with pytest.raises(DataError, match=r"m\.jpg: masks must be lossless.*PNG"):
        read_mask(tmp_path / "m.jpg", num_classes=2)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """A phone photo stored sideways (EXIF Orientation 6: rotate 90° clockwise to view) reads upright."""
    stored = np.zeros((20, 30, 3), dtype=np.uint8)
    stored[:, :10] = 255  # the stored left third is white
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=100)
    upright = read_image(path)
    assert upright.shape == (30, 20, 3)  # rotated: width and height swap
    assert upright[:8].mean() > 200 and upright[-8:].mean() < 50  # the white third is now on top
    Image.fromarray(stored).save(tmp_path / "plain.jpg", quality=100)
    assert read_image(tmp_path / "plain.jpg").shape == (20, 30, 3)
