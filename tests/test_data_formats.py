"""Masks from labelling tools: COCO JSON (CVAT, Label Studio), CVAT's Segmentation mask
1.1, colour-coded masks with a classes file or a published colour convention.

Every dataset here is written in its real on-disk layout (``_label_exports``) and the
masks it gives are compared pixel for pixel with rasters computed independently; then a
few training iterations run on each through ``atrous train``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from _label_exports import (
    COCO_CLASSES,
    CROWD,
    CVAT_LABELS,
    IGNORE,
    SIZE,
    binary,
    cityscapes_colour_folder,
    colour_folder,
    cvat_coco,
    cvat_mask_export,
    index_masks,
    label_studio_coco,
    paint,
)
from _training import TINY_MODEL
from PIL import Image

from atrous.cli import main
from atrous.data import build_dataset, detect_layout
from atrous.data.io import colors_to_indices
from atrous.errors import ConfigError, DataError

pytest.importorskip("pycocotools", reason="the COCO layout needs pycocotools (make test installs it)")


def _masks_by_name(dataset: object) -> dict[str, np.ndarray]:
    return {dataset.samples[i][0].name: dataset[i][1].numpy() for i in range(len(dataset))}


# --- COCO ---------------------------------------------------------------------------------


def test_cvat_coco_polygons_rle_crowd_and_overlaps_give_the_expected_masks(tmp_path: Path) -> None:
    expected = cvat_coco(tmp_path)
    assert detect_layout(tmp_path) == "coco"
    for split in ("train", "val"):
        dataset = build_dataset(None, tmp_path, split)
        assert dataset.class_names == COCO_CLASSES and dataset.num_classes == 4
        masks = _masks_by_name(dataset)
        assert sorted(masks) == sorted(expected[split])
        for name, mask in masks.items():
            np.testing.assert_array_equal(mask, expected[split][name], err_msg=f"{split}/{name}")
        image, _ = dataset[0]
        assert image.shape == (3, *SIZE)
    problems = build_dataset("coco", tmp_path, "train").layout_problems()
    assert len(problems) == 1 and "3 annotation(s) have no mask (a box only" in problems[0]


def test_crowd_regions_take_their_class_when_asked(tmp_path: Path) -> None:
    expected = cvat_coco(tmp_path)
    dataset = build_dataset("coco", tmp_path, "val", crowd="class")
    ((name, mask),) = _masks_by_name(dataset).items()
    want = expected["val"][name].copy()
    want[want == IGNORE] = 3  # the crowd is of people
    np.testing.assert_array_equal(mask, want)
    assert binary(CROWD).sum() > 0 and (mask[binary(CROWD).astype(bool)] == 3).all()
    with pytest.raises(ConfigError, match="unknown crowd rule 'drop'; valid: class, ignore"):
        build_dataset("coco", tmp_path, "val", crowd="drop")


def test_label_studio_result_json_with_upload_paths_and_ids_from_zero(tmp_path: Path) -> None:
    expected = label_studio_coco(tmp_path)
    assert detect_layout(tmp_path) == "coco"
    everything = build_dataset(None, tmp_path, "all")
    assert everything.class_names == ["background", "Car", "Road"]
    masks = _masks_by_name(everything)
    assert len(masks) == 5  # the image nobody annotated is left out
    for name, mask in masks.items():
        np.testing.assert_array_equal(mask, expected[name], err_msg=name)
    assert any("1 of 6 images have nothing to paint" in line for line in everything.layout_problems())
    kept = build_dataset(None, tmp_path, "all", unannotated="background")
    assert len(kept) == 6 and not _masks_by_name(kept)["3f9a5c-frame5.png"].any()
    train, val = build_dataset(None, tmp_path, "train"), build_dataset(None, tmp_path, "val")
    assert (len(train), len(val)) == (4, 1)
    assert {p for p, _ in train.samples} | {p for p, _ in val.samples} == {p for p, _ in everything.samples}


def test_a_background_category_is_class_zero(tmp_path: Path) -> None:
    label_studio_coco(tmp_path)
    data = json.loads((tmp_path / "result.json").read_text())
    data["categories"].append({"id": 9, "name": "Background"})
    (tmp_path / "result.json").write_text(json.dumps(data))
    assert build_dataset("coco", tmp_path, "all").class_names == ["Background", "Car", "Road"]


def _broken_annotation(tmp_path: Path, **changes: object) -> Path:
    label_studio_coco(tmp_path)
    data = json.loads((tmp_path / "result.json").read_text())
    data["annotations"][1].update(changes)
    (tmp_path / "result.json").write_text(json.dumps(data))
    return tmp_path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"segmentation": {"size": list(SIZE), "counts": [0, SIZE[0] * SIZE[1] + 50]}}, "RLE runs cover 1074 pixels"),
        ({"segmentation": {"size": [8, 8], "counts": [64]}}, r"RLE size \[8, 8\] \(height, width\) is not the image's"),
        ({"segmentation": {"size": list(SIZE), "counts": "0;Z;"}}, "RLE runs cover"),
        ({"segmentation": [[0, 0, 1e9, 0, 0, 5]]}, "far outside the 32x32 image"),
        ({"segmentation": [[0, 0, 5, 0, "x", 5]]}, "not a finite number"),
        ({"category_id": 42}, "category_id 42, which 'categories' does not list"),
    ],
)
def test_a_bad_annotation_is_one_error_naming_the_file_annotation_and_image(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    root = _broken_annotation(tmp_path, **changes)
    with pytest.raises(DataError, match=message) as caught:
        build_dataset("coco", root, "all")
    assert f"{root / 'result.json'}: annotation 1 (image /data/upload/1/3f9a0c-frame0.png)" in str(caught.value)


def test_compressed_rle_run_lengths_are_read_as_pycocotools_writes_them() -> None:
    from pycocotools import mask as mask_api

    from atrous.data.coco import _compressed_total

    rng = np.random.default_rng(0)
    for height, width in ((1, 1), (7, 3), (64, 48), (300, 17)):
        for density in (0.0, 0.02, 0.5, 1.0):
            bits = (rng.random((height, width)) < density).astype(np.uint8)
            counts = mask_api.encode(np.asfortranarray(bits))["counts"].decode("ascii")
            assert _compressed_total(counts) == height * width
    with pytest.raises(ValueError, match="ends inside a number"):
        _compressed_total("0a")  # "a" (49) has the continuation bit and nothing follows


def test_a_missing_image_and_missing_pycocotools_are_one_line_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    label_studio_coco(tmp_path)
    (tmp_path / "images" / "3f9a2c-frame2.png").unlink()
    with pytest.raises(DataError, match=r"image '/data/upload/1/3f9a2c-frame2.png' \(id 2\) is not in"):
        build_dataset("coco", tmp_path, "all")
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    with pytest.raises(ConfigError, match=r"pycocotools: pip install 'atrous\[coco\]'"):
        build_dataset("coco", tmp_path, "all")


# --- colour masks ---------------------------------------------------------------------------


def test_cvat_segmentation_mask_export_gives_the_expected_masks(tmp_path: Path) -> None:
    expected = cvat_mask_export(tmp_path)
    stored = tmp_path / "SegmentationClass" / "frame_000002.png"
    Image.open(stored).quantize(colors=len(CVAT_LABELS)).save(stored)  # a palette PNG: read by its colours too
    assert Image.open(stored).mode == "P"
    assert (np.array(Image.open(stored)) != expected["train"]["frame_000002"]).any()  # its indices are not the classes
    assert detect_layout(tmp_path) == "cvat-mask"  # before voc, whose folders it shares
    for split in ("train", "val"):
        dataset = build_dataset(None, tmp_path, split)
        assert dataset.class_names == [name for name, _ in CVAT_LABELS]
        assert dataset.palette == [color for _, color in CVAT_LABELS]
        masks = {image.stem: mask for (image, _), mask in zip(dataset.samples, dataset.masks())}
        assert sorted(masks) == sorted(expected[split])
        for name, mask in masks.items():
            np.testing.assert_array_equal(mask, expected[split][name], err_msg=f"{split}/{name}")


def test_an_unknown_colour_is_named_with_its_file_and_pixel(tmp_path: Path) -> None:
    cvat_mask_export(tmp_path)
    mask_path = tmp_path / "SegmentationClass" / "frame_000001.png"
    pixels = np.array(Image.open(mask_path))
    pixels[7, 5] = (1, 2, 3)
    pixels[30, 31] = (1, 2, 3)
    Image.fromarray(pixels).save(mask_path)
    dataset = build_dataset("cvat-mask", tmp_path, "train")
    with pytest.raises(DataError) as caught:
        dataset[1]
    assert str(caught.value).startswith(
        f"{mask_path}: colour (1, 2, 3) (first at x=5, y=7) is not a class colour of {tmp_path / 'labelmap.txt'}"
    )


def test_a_colour_folder_with_classes_txt(tmp_path: Path) -> None:
    expected = colour_folder(tmp_path)
    dataset = build_dataset(None, tmp_path, "all")
    assert dataset.class_names == ["background", "road", "car"]
    for (image, _), mask in zip(dataset.samples, dataset.masks()):
        np.testing.assert_array_equal(mask, expected[image.stem])


def test_cityscapes_and_camvid_colour_conventions(tmp_path: Path) -> None:
    from atrous.data import CAMVID_PALETTE, CITYSCAPES_PALETTE, COLOR_CONVENTIONS

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    mask = index_masks(1, 19)[0]
    colours = paint(mask, [tuple(c) for c in CITYSCAPES_PALETTE])
    colours[0, :4] = (111, 74, 0)  # "dynamic": not an evaluation class
    colours[1, :4] = (0, 0, 0)  # unlabeled
    Image.fromarray(colours).save(tmp_path / "masks" / "aachen.png")
    Image.fromarray(np.zeros((*SIZE, 3), np.uint8)).save(tmp_path / "images" / "aachen.png")
    dataset = build_dataset("folder", tmp_path, "all", colors="cityscapes")
    want = mask.copy()
    want[0:2, :4] = IGNORE
    assert dataset.num_classes == 19 and dataset.class_names[0] == "road"
    np.testing.assert_array_equal(next(dataset.masks()), want)
    with pytest.raises(
        DataError,
        match=r"aachen.png: colours \(0, 0, 70\) \(first at x=\d+, y=\d+\), .* and \d+ more are not class colours of the camvid colours",
    ):
        next(build_dataset("folder", tmp_path, "all", colors="camvid").masks())
    camvid, camvid32 = COLOR_CONVENTIONS["camvid"], COLOR_CONVENTIONS["camvid32"]
    assert camvid.colors == CAMVID_PALETTE and len(camvid32.names) == 31 and (0, 0, 0) in camvid32.ignore_colors
    (tmp_path / "classes.txt").write_text("road\n")
    with pytest.raises(ConfigError, match="classes.txt and colors='cityscapes' both name the classes"):
        build_dataset("folder", tmp_path, "all", colors="cityscapes")
    with pytest.raises(ConfigError, match="unknown colour convention"):
        build_dataset("folder", tmp_path, "all", colors="kitti")


def test_colour_lookup_matches_a_per_pixel_lookup_and_refuses_a_shared_colour() -> None:
    rng = np.random.default_rng(3)
    palette = [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(12)]
    mask = rng.integers(0, 12, (40, 30))
    rgb = paint(mask, palette)
    rgb[5, 6] = (7, 7, 7)
    out = colors_to_indices(rgb, palette, ignore_index=IGNORE, ignore_colors=[(7, 7, 7)])
    lookup = {color: index for index, color in enumerate(palette)} | {(7, 7, 7): IGNORE}
    looped = np.array([[lookup[tuple(int(v) for v in rgb[y, x])] for x in range(30)] for y in range(40)])
    np.testing.assert_array_equal(out, looped)
    with pytest.raises(DataError, match=r"colour \(1, 2, 3\) is given to both class 0 and 1"):
        colors_to_indices(rgb, [(1, 2, 3), (1, 2, 3)], ignore_index=IGNORE)


# --- training on each layout ----------------------------------------------------------------

LAYOUTS = {
    "cvat-coco": (cvat_coco, [], ["person", "car", "road"]),
    "label-studio-coco": (label_studio_coco, [], ["Car", "Road"]),
    "cvat-mask": (cvat_mask_export, [], ["sky", "road", "car"]),
    "classes-txt-colours": (colour_folder, [], ["road", "car"]),
    "cityscapes-colours": (cityscapes_colour_folder, ["--set", "dataset_options.colors=cityscapes"], ["road", "sky"]),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_train_a_few_iterations_then_evaluate(layout: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from atrous.checkpoint import read_checkpoint

    build, extra, names = LAYOUTS[layout]
    root = tmp_path / "data"
    build(root)
    out = tmp_path / "run"
    argv = ["train", "--data", str(root), "--model", TINY_MODEL, "--crop-size", "32", "--batch-size", "2"]
    argv += ["--epochs", "2", "--max-iters", "2", "--workers", "0", "--no-progress", "--out", str(out), *extra]
    assert main(argv) == 0, capsys.readouterr().err
    checkpoint = read_checkpoint(out / "last.pt")
    assert checkpoint["epoch"] == 2 and checkpoint["iteration"] >= 2
    assert all(name in checkpoint["class_names"] for name in names)
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "last.pt"), "--data", str(root), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "mIoU" in printed and all(name in printed for name in names)


def test_training_refuses_splits_whose_classes_differ(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cvat_coco(tmp_path / "data")
    val = tmp_path / "data" / "annotations" / "instances_val.json"
    data = json.loads(val.read_text())
    data["categories"][1]["name"], data["categories"][2]["name"] = "person", "car"  # same count, other order
    val.write_text(json.dumps(data))
    argv = ["train", "--data", str(tmp_path / "data"), "--model", TINY_MODEL, "--out", str(tmp_path / "run")]
    assert main([*argv, "--workers", "0", "--no-progress"]) == 2
    assert "class 2 is 'car' in the train split but 'person' in val" in capsys.readouterr().err
