"""Fine-tuning on one's own folder through the real CLI: fine-tuning defaults, masks whose
"unlabelled" value is 11, ``--label-map``, ``--resume --out`` alone, a larger ``--epochs``,
and options given again that disagree with the run."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atrous.checkpoint import read_checkpoint
from atrous.cli import main
from atrous.engine.rundir import LOCK_NAME

REPO = Path(__file__).resolve().parents[1]
CAMVID = REPO / "atrous" / "weights" / "camvid_deeplabv3plus_mobilenet_edgetpu_cityscapes.pt"
UNLABELLED = 11


def street_folder(root: Path, count: int = 20, size: int = 64) -> Path:
    """images/ + masks/ of ``count`` blocky ``size``² frames; mask values 0..10 are classes,
    11 is "unlabelled" (as in CamVid's masks); no classes file."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for index in range(count):
        mask = rng.integers(0, UNLABELLED + 1, (size // 8, size // 8), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
        image = np.stack([mask * 20, 255 - mask * 20, mask * 7], -1) + rng.integers(0, 30, (size, size, 3))
        Image.fromarray(image.astype(np.uint8)).save(root / "images" / f"frame{index:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"frame{index:02d}.png")
    return root


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not CAMVID.is_file():
        pytest.skip("the shipped CamVid model is not in this checkout")
    return street_folder(tmp_path_factory.mktemp("walk") / "my_street_photos")


def _train(*argv: str) -> int:
    return main(["train", *argv, "--workers", "0", "--no-progress"])


def test_fine_tune_a_folder_then_resume_it_with_only_out(
    walk: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        assert (
            _train(
                "--pretrained",
                str(CAMVID),
                "--data",
                str(walk),
                "--ignore-index",
                "11",
                "--epochs",
                "1",
                "--out",
                str(out),
            )
            == 0
        )
    chosen = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("fine-tuning"))
    for text in ("optimizer adamw", "lr 0.0003", "freeze_bn true", "loss bootstrap", "ema 0.995", "crop_size 64×64"):
        assert text in chosen
    first = read_checkpoint(out / "last.pt")
    settings = first["train_config"]
    assert (settings["optimizer"], settings["lr"], settings["freeze_bn"], settings["crop_size"]) == (
        "adamw",
        0.0003,
        True,
        [64, 64],
    )
    assert first["model"]["config"]["num_classes"] == 11 and first["ignore_index"] == UNLABELLED
    assert first["epoch"] == 1 and not (out / LOCK_NAME).exists()

    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert _train("--resume", "--out", str(out), "--epochs", "2") == 0
    assert f"resumed from {out / 'last.pt'} at epoch 2, iteration {first['iteration']}" in caplog.text
    assert "fine-tuning" not in caplog.text  # the run's own settings, not chosen again
    second = read_checkpoint(out / "last.pt")
    assert second["epoch"] == 2 and second["iteration"] == 2 * first["iteration"]
    assert {k: v for k, v in second["train_config"].items() if k not in ("epochs", "resume")} == {
        k: v for k, v in settings.items() if k not in ("epochs", "resume")
    }
    assert not (out / LOCK_NAME).exists()


def test_resume_refuses_options_that_disagree_by_name(
    walk: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    assert _train("--pretrained", str(CAMVID), "--data", str(walk), "--ignore-index", "11", "--epochs", "1",
                  "--max-iters", "1", "--val-every", "0", "--out", str(out)) == 0  # fmt: skip
    before = (out / "last.pt").read_bytes()
    capsys.readouterr()
    assert _train("--resume", "--out", str(out), "--lr", "0.01", "--ignore-index", "255", "--epochs", "2") == 2
    line = capsys.readouterr().err.strip()
    assert "lr 0.01 (the run has 0.0003)" in line and "ignore_index 255 (the run has 11)" in line and "\n" not in line
    # the same options again (the data by another spelling of its path) are no conflict
    assert _train("--resume", "--out", str(out), "--data", str(walk / ".." / walk.name), "--ignore-index", "11",
                  "--max-iters", "1", "--val-every", "0", "--epochs", "2") == 0  # fmt: skip
    assert read_checkpoint(out / "last.pt")["epoch"] == 2 and (out / "last.pt").read_bytes() != before


def test_without_ignore_index_the_error_names_the_file_value_and_options(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = street_folder(tmp_path / "data", count=6, size=32)
    (data / "classes.txt").write_text("\n".join(f"c{i}" for i in range(11)) + "\n")
    assert _train("--data", str(data), "--model", "lraspp_mobilenet_v3_small", "--batch-size", "2",
                  "--crop-size", "32", "--epochs", "1", "--out", str(tmp_path / "run")) == 2  # fmt: skip
    line = capsys.readouterr().err.strip()
    assert "masks/frame" in line and "mask values 11 " in line
    assert "--ignore-index 11" in line and "--label-map 11:255" in line and "\n" not in line
    assert not (tmp_path / "run" / "last.pt").exists()


def test_label_map_renames_values_before_training(tmp_path: Path) -> None:
    data = street_folder(tmp_path / "data", count=6, size=32)
    mapping = tmp_path / "map.yaml"
    mapping.write_text("11: ignore\n10: 0\n")
    out = tmp_path / "run"
    assert _train("--data", str(data), "--model", "lraspp_mobilenet_v3_small", "--batch-size", "2", "--crop-size", "32",
                  "--epochs", "1", "--max-iters", "1", "--label-map", str(mapping), "--out", str(out)) == 0  # fmt: skip
    saved = read_checkpoint(out / "last.pt")
    assert saved["model"]["config"]["num_classes"] == 10 and saved["ignore_index"] == 255  # 10 → 0, 11 → ignore
    assert saved["train_config"]["label_map"] == str(mapping)


def test_a_recipe_for_camvid_on_a_folder_suggests_dataset_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = street_folder(tmp_path / "data", count=2, size=32)
    assert (
        _train("--config", "camvid_deeplabv3plus_mobilenet_v2", "--data", str(data), "--out", str(tmp_path / "run"))
        == 2
    )
    line = capsys.readouterr().err.strip()
    assert "CamVid label folder not found" in line and "--dataset folder" in line


def test_one_class_more_than_the_pretrained_model_suggests_ignore_index() -> None:
    from atrous.engine.finetune import class_count_note

    if not CAMVID.is_file():
        pytest.skip("the shipped CamVid model is not in this checkout")
    camvid = read_checkpoint(CAMVID)
    assert class_count_note(camvid, 11) is None
    assert class_count_note(camvid, 12).endswith(
        "pass --ignore-index 11"
    )  # masks with 11 = unlabelled, counted as a class
    assert "starts afresh" in class_count_note(camvid, 3) and "ignore-index" not in class_count_note(camvid, 3)


def test_eval_reads_masks_as_the_run_did_or_as_told(walk: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    out = tmp_path / "run"
    assert _train("--pretrained", str(CAMVID), "--data", str(walk), "--ignore-index", "11", "--epochs", "1",
                  "--max-iters", "1", "--val-every", "0", "--out", str(out)) == 0  # fmt: skip
    capsys.readouterr()

    def evaluate(*argv: str) -> dict:
        assert main(["eval", *argv, "--workers", "0", "--no-progress", "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    # the run's own data: its --ignore-index 11 applies without being given again
    run = evaluate("--checkpoint", str(out / "last.pt"))
    told = evaluate("--checkpoint", str(out / "last.pt"), "--data", str(walk), "--ignore-index", "11")
    assert run["miou"] == told["miou"]
    # a shipped model on the folder: the masks' 11 is unlabelled only when said so
    assert evaluate("--checkpoint", "camvid", "--data", str(walk), "--label-map", "11:255")["miou"] == pytest.approx(
        evaluate("--checkpoint", "camvid", "--data", str(walk), "--ignore-index", "11")["miou"]
    )
    assert main(["eval", "--checkpoint", "camvid", "--data", str(walk), "--workers", "0", "--no-progress"]) == 2
    assert "mask values 11" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", "camvid"]) == 2
    line = capsys.readouterr().err.strip()
    assert "give --data DIR" in line and "shared" not in line and "\n" not in line


def test_masks_showing_fewer_classes_keep_the_pretrained_classes(
    walk: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A few photos whose masks use CamVid's ids 0..5 only: the classifier keeps its 11
    # classes (rows loaded, not started afresh) unless --num-classes asks for another.
    folder = tmp_path / "few"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for index in range(8):
        mask = (np.arange(64 * 64, dtype=np.uint8).reshape(64, 64) // 8 + index) % 6
        Image.fromarray(np.stack([mask * 40] * 3, -1).astype(np.uint8)).save(folder / "images" / f"{index}.png")
        Image.fromarray(mask).save(folder / "masks" / f"{index}.png")
    common = ("--pretrained", str(CAMVID), "--data", str(folder), "--epochs", "1", "--batch-size", "2")
    with caplog.at_level(logging.INFO):
        assert _train(*common, "--out", str(tmp_path / "kept")) == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("the masks show 6 classes, fewer than the 11 of the pretrained model" in m for m in messages)
    assert not any("starts afresh" in m for m in messages)
    assert read_checkpoint(tmp_path / "kept" / "last.pt")["model"]["config"]["num_classes"] == 11
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert _train(*common, "--num-classes", "6", "--out", str(tmp_path / "new")) == 0
    assert any("starts afresh" in r.getMessage() for r in caplog.records)
    assert read_checkpoint(tmp_path / "new" / "last.pt")["model"]["config"]["num_classes"] == 6
