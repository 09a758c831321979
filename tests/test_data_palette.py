"""Palettes: VOC colour map, colorize/overlay, palette PNGs, class files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atrous.data import colorize, overlay, parse_class_file, save_index_png, voc_colormap
from atrous.errors import DataError, InputError

PALETTE = [(10, 20, 30), (200, 100, 0), (0, 0, 255)]


def test_voc_colormap_known_entries() -> None:
    colors = voc_colormap()
    assert len(colors) == 256 and len(set(colors)) == 256
    assert colors[:5] == [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128)]
    assert colors[15] == (192, 128, 128)  # person
    assert colors[255] == (224, 224, 192)  # the border colour of VOC masks


def test_colorize_maps_classes_and_blackens_ignore() -> None:
    mask = torch.tensor([[0, 1], [2, 255]])
    out = colorize(mask, PALETTE)
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert out[0, 0].tolist() == [10, 20, 30] and out[1, 0].tolist() == [0, 0, 255]
    assert out[1, 1].tolist() == [0, 0, 0]
    assert colorize(np.array([[-1, 3]]), PALETTE).tolist() == [[[0, 0, 0], [0, 0, 0]]]


def test_overlay_blends_labelled_pixels_only() -> None:
    image = np.full((1, 3, 3), 100, np.uint8)
    out = overlay(image, np.array([[1, 255, 2]]), PALETTE, alpha=0.5)
    assert out[0, 0].tolist() == [150, 100, 50]
    assert out[0, 1].tolist() == [100, 100, 100]  # ignore: image unchanged
    assert out[0, 2].tolist() == [50, 50, 178]
    np.testing.assert_array_equal(overlay(image, np.array([[1, 1, 1]]), PALETTE, alpha=0.0), image)


def test_overlay_rejects_bad_input() -> None:
    with pytest.raises(InputError, match="differ in size"):
        overlay(np.zeros((2, 2, 3), np.uint8), np.zeros((3, 3), np.int64), PALETTE)
    with pytest.raises(InputError, match="uint8"):
        overlay(np.zeros((2, 2, 3), np.float32), np.zeros((2, 2), np.int64), PALETTE)
    with pytest.raises(InputError, match="alpha"):
        overlay(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), np.int64), PALETTE, alpha=1.5)


def test_save_index_png_round_trip(tmp_path: Path) -> None:
    mask = np.array([[0, 1], [2, 255]], dtype=np.int64)
    path = tmp_path / "m.png"
    save_index_png(path, mask, PALETTE)
    with Image.open(path) as image:
        assert image.mode == "P"
        np.testing.assert_array_equal(np.asarray(image), mask)
        assert image.getpalette()[:9] == [10, 20, 30, 200, 100, 0, 0, 0, 255]
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]  # no temp file left behind


def test_save_index_png_refuses_unstorable_values_and_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "m.png"
    save_index_png(path, np.zeros((2, 2), np.int64), PALETTE)
    before = path.read_bytes()
    with pytest.raises(InputError, match="0..255"):
        save_index_png(path, np.array([[0, 300]]), PALETTE)
    assert path.read_bytes() == before


def test_class_txt_names_and_colours(tmp_path: Path) -> None:
    path = tmp_path / "classes.txt"
    path.write_text("# comment\nbackground 0 0 0\ntraffic light 250,170,30\n\ncar #00008e\n")
    spec = parse_class_file(path)
    assert spec.names == ["background", "traffic light", "car"]
    assert spec.colors == [(0, 0, 0), (250, 170, 30), (0, 0, 142)]
    path.write_text("sky\nroad\n")
    assert parse_class_file(path).names == ["sky", "road"] and parse_class_file(path).colors is None


def test_class_txt_partial_or_bad_colours(tmp_path: Path) -> None:
    path = tmp_path / "classes.txt"
    path.write_text("sky 1 2 3\nroad\n")
    with pytest.raises(DataError, match="not for \\['road'\\]"):
        parse_class_file(path)
    path.write_text("sky 1 2 300\n")
    with pytest.raises(DataError, match="line 1: colour"):
        parse_class_file(path)
    path.write_text("\n# nothing\n")
    with pytest.raises(DataError, match="lists no classes"):
        parse_class_file(path)


def test_class_json_and_yaml(tmp_path: Path) -> None:
    json_path = tmp_path / "classes.json"
    json_path.write_text(json.dumps({"classes": [{"name": "a", "color": [1, 2, 3]}, {"name": "b", "color": "#ffffff"}],
                                     "ignore_color": [0, 0, 0]}))  # fmt: skip
    spec = parse_class_file(json_path)
    assert spec.names == ["a", "b"] and spec.colors == [(1, 2, 3), (255, 255, 255)]
    assert spec.ignore_colors == ((0, 0, 0),)
    yaml_path = tmp_path / "classes.yaml"
    yaml_path.write_text("- background\n- cat\n- dog\n")
    assert parse_class_file(yaml_path).names == ["background", "cat", "dog"]
    yaml_path.write_text("classes: [a, {b: 1}]\n")
    with pytest.raises(DataError, match="entry 1"):
        parse_class_file(yaml_path)
    json_path.write_text("{not json")
    with pytest.raises(DataError, match="not valid json"):
        parse_class_file(json_path)
