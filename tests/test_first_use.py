"""First use outside the source tree: recipes ship in the package and run by
name, a folder of images and masks needs no classes file, any one split is enough to
recognise a layout, and the demo's summary picture explains itself."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from atrous.cli import build_parser, main
from atrous.cli.train import config_from_args
from atrous.data import build_dataset, detect_layout
from atrous.errors import ConfigError, DataError
from atrous.recipes import RECIPES, find_recipe, recipe_names

REPO = Path(__file__).resolve().parents[1]


def test_recipes_live_in_the_package_and_configs_points_there() -> None:
    assert RECIPES == REPO / "atrous" / "configs"
    assert "camvid_deeplabv3plus_mobilenet_v2" in recipe_names()
    assert (REPO / "configs").resolve() == RECIPES  # one copy: the repository's configs/ is a link
    import tomllib

    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["atrous"]
    assert {"configs/*.yaml", "class_maps/*.yaml"} <= set(package_data)  # + class maps (and the shipped weights)


def test_a_recipe_runs_by_name_or_path(tmp_path: Path) -> None:
    def config(value: str) -> object:
        return config_from_args(build_parser().parse_args(["train", "--config", value]))

    by_name = config("camvid_deeplabv3plus_mobilenet_v2")
    assert by_name == config("camvid_deeplabv3plus_mobilenet_v2.yaml")
    assert by_name == config(str(REPO / "configs" / "camvid_deeplabv3plus_mobilenet_v2.yaml"))
    assert by_name.model == "deeplabv3plus_mobilenet_v2" and by_name.dataset == "camvid"
    own = tmp_path / "mine.yaml"
    own.write_text("model: lraspp_mobilenet_v3_small\n")
    assert config(str(own)).model == "lraspp_mobilenet_v3_small"
    with pytest.raises(ConfigError, match="shipped recipe name: .*shapes_deeplabv3plus_mobilenet_v2"):
        find_recipe("no_such_recipe")


def test_list_configs_lists_every_recipe(capsys: pytest.CaptureFixture) -> None:
    assert main(["list", "--configs"]) == 0
    out = capsys.readouterr().out
    for path in RECIPES.glob("*.yaml"):
        assert path.stem in out


def test_a_wheel_carries_the_recipes(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")
    source = tmp_path / "src"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(REPO / "atrous", source / "atrous", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if built.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {built.stderr.strip()[-300:]}")
    (wheel,) = tmp_path.glob("atrous-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for path in RECIPES.glob("*.yaml"):
        assert f"atrous/configs/{path.name}" in names


def _folder(root: Path, values: list[int], classes: str | None = None) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for index, value in enumerate(values):
        Image.fromarray(np.full((8, 8, 3), 40 * index, np.uint8)).save(root / "images" / f"im{index}.png")
        mask = np.zeros((8, 8), np.uint8)
        mask[:4] = value
        mask[0, 0] = 255  # ignore
        Image.fromarray(mask).save(root / "masks" / f"im{index}.png")
    if classes is not None:
        (root / "classes.txt").write_text(classes)
    return root


def test_classes_are_found_in_the_masks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _folder(tmp_path / "data", [1, 3, 1])
    with caplog.at_level(logging.INFO):
        dataset = build_dataset(None, root, "all")
    assert dataset.num_classes == 4
    assert "found 4 classes in 3 masks (values 0, 1, 3; classes [2] have no pixels)" in caplog.text
    assert "classes.txt" in caplog.text
    assert build_dataset(None, root, "all", num_classes=6).num_classes == 6


def test_train_takes_num_classes(tmp_path: Path) -> None:
    config = config_from_args(build_parser().parse_args(["train", "--data", "x", "--num-classes", "5"]))
    assert config.num_classes == 5


def test_duplicate_class_names_are_refused(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data", [1, 2], classes="bg\ncar\ncar\n")
    with pytest.raises(DataError, match="'car' appear more than once"):
        build_dataset(None, root, "all")


def test_a_layout_is_recognised_from_any_split(tmp_path: Path) -> None:
    for split in ("val", "test"):
        root = tmp_path / split
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        assert detect_layout(root) == "camvid"


def test_demo_summary_has_titles_legend_and_strong_overlays(tmp_path: Path) -> None:
    from atrous.cli.demo import OVERLAY_ALPHA, _summary_grid
    from atrous.data import colorize, overlay

    palette = [(0, 0, 0), (255, 0, 0), (0, 200, 0)]
    inputs, predictions = tmp_path / "in", tmp_path / "pred"
    inputs.mkdir()
    predictions.mkdir()
    truth = np.zeros((32, 32), np.int64)
    truth[8:24, 8:24] = 1
    image = np.full((32, 32, 3), 128, np.uint8)
    Image.fromarray(image).save(inputs / "s.png")
    Image.fromarray(overlay(image, truth, palette, alpha=OVERLAY_ALPHA)).save(predictions / "s_overlay.png")
    Image.fromarray(colorize(truth, palette)).save(predictions / "s_crf_overlay.png")
    _summary_grid(
        inputs, predictions, [("s", truth)], palette, tmp_path / "summary.png", ["background", "square", "disc"]
    )
    summary = np.asarray(Image.open(tmp_path / "summary.png").convert("RGB"))
    assert summary.shape[0] > 32 + 16  # a title row and a legend under the tiles
    legend = summary[32 + 16 :]
    assert ((legend == (0, 200, 0)).all(-1)).any()  # the colour of a class absent from the tiles
    assert OVERLAY_ALPHA >= 0.7
    assert (summary[:16] < 128).any()  # titles are drawn


def test_demo_segments_the_real_photo_with_the_voc_model(tmp_path: Path) -> None:
    from PIL import Image

    from atrous.cli.demo import _segment_real_photo

    panel = _segment_real_photo(tmp_path / "voc")
    assert panel == tmp_path / "voc" / "bird_panel.png" and panel.is_file()
    mask = np.asarray(Image.open(tmp_path / "voc" / "bird.png"))
    assert (mask == 3).mean() > 0.1 and set(np.unique(mask)) <= {0, 3}  # the bird (class 3), on background


def test_demo_refuses_to_replace_an_earlier_demo_without_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from atrous.cli import main

    keep = tmp_path / "run" / "best.pt"
    keep.parent.mkdir()
    keep.write_bytes(b"an earlier run")
    assert main(["demo", "--out", str(tmp_path)]) == 2
    line = capsys.readouterr().err.strip()
    assert "holds an earlier demo (run)" in line and "--overwrite" in line and "\n" not in line
    assert keep.read_bytes() == b"an earlier run"  # nothing deleted


TINY_DEMO_RECIPE = """dataset: shapes
dataset_options: {size: 32, num_images: 8, num_classes: 3}
model: lraspp_mobilenet_v3_small
crop_size: 32
batch_size: 4
epochs: 1
workers: 0
val_batch_size: 4
progress: false
"""


def test_demo_overwrite_replaces_only_what_the_demo_wrote(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`make demo` twice works; a user's files in --out, or in the demo's folders, are never deleted."""
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_DEMO_RECIPE)
    out = tmp_path / "demo_out"
    argv = ["demo", "--out", str(out), "--overwrite", "--config", str(recipe), "--images", "1"]
    assert main(argv) == 0  # a tiny run misses the demo's mIoU target: a warning, not a failure
    notes = out / "notes.txt"
    notes.write_text("mine")
    first = (out / "inputs" / "shape_00.png").stat().st_mtime_ns
    assert main(argv) == 0  # the second `make demo`
    assert notes.read_text() == "mine" and (out / "run" / "last.pt").is_file()
    assert (out / "inputs" / "shape_00.png").stat().st_mtime_ns != first  # replaced
    capsys.readouterr()

    keep = out / "predictions" / "keep_me.png"
    keep.write_bytes(b"a user's picture")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert main(argv) == 2
    line = capsys.readouterr().err.strip()
    assert "predictions/keep_me.png" in line and "did not write" in line and "\n" not in line
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing deleted
    keep.unlink()
    (out / "run" / "log.csv").write_text("edited by hand")  # changed since the demo wrote it
    assert main(argv) == 2 and "run/log.csv" in capsys.readouterr().err
    assert (out / "run" / "log.csv").read_text() == "edited by hand" and (out / "run" / "last.pt").is_file()


def test_demo_overwrite_refuses_a_folder_no_demo_wrote(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    mine = [
        tmp_path / "run" / "mine.txt",
        tmp_path / "predictions" / "keep_me.png",
        tmp_path / "inputs" / "my_input.jpg",
    ]
    for path in mine:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"mine")
    assert main(["demo", "--out", str(tmp_path), "--overwrite"]) == 2
    line = capsys.readouterr().err.strip()
    assert "did not write" in line and "inputs/my_input.jpg" in line and "\n" not in line
    assert all(path.read_bytes() == b"mine" for path in mine)


def test_demo_refuses_zero_epochs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["demo", "--out", str(tmp_path / "d"), "--epochs", "0"]) == 2
    assert "--epochs: must be ≥ 1" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_an_interrupted_demo_says_to_rerun_it_and_the_rerun_replaces_it(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import signal

    from atrous.engine.trainer import Trainer

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_DEMO_RECIPE)
    out = tmp_path / "demo_out"
    argv = ["demo", "--out", str(out), "--overwrite", "--config", str(recipe), "--images", "1"]
    original = Trainer.step

    def step_then_ctrl_c(self: Trainer, images: Any, masks: Any) -> float:
        loss = original(self, images, masks)
        os.kill(os.getpid(), signal.SIGINT)
        return loss

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "step", step_then_ctrl_c)
        assert main(argv) == 128 + signal.SIGINT
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the demo stopped; run it again" in line and "--resume" not in line
    assert (out / "run" / "last.pt").is_file()  # what the stopped demo wrote is its own: replaced by the rerun
    assert main(argv) == 0 and (out / "summary.png").is_file()
