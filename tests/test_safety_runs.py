"""Nothing lost in a run folder: diverging runs save nothing, other files are not
replaced without ``--overwrite``, a failed ``--overwrite`` puts the old run back, best.pt
never lags behind last.pt, killed writes are tidied, options are checked up front.
The process-level faults (SIGTERM, two runs at once, kill -9) are in test_safety_processes."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _inference_models import single_thread
from _training import folder_dataset, tiny_run_config

from atrous.checkpoint import read_checkpoint
from atrous.engine import train
from atrous.engine.config import make_config
from atrous.engine.trainer import Trainer
from atrous.errors import CheckpointError, ConfigError, DataError, TrainingError


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    yield from single_thread()


def test_a_diverging_run_saves_nothing_non_finite(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match="Lower --lr"):
        train(tiny_run_config(out, lr=1e6, epochs=3))
    for checkpoint in out.glob("*.pt"):
        read_checkpoint(checkpoint)  # would refuse non-finite weights


@pytest.mark.parametrize("files", [["best.pt"], ["log.csv", "curve.png"], ["curve.png"]])
def test_a_folder_with_any_run_file_is_not_overwritten(files: list[str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    for name in files:
        (out / name).write_text("the user's own")
    with pytest.raises(ConfigError, match="already holds a run"):
        train(tiny_run_config(out))
    assert all((out / name).read_text() == "the user's own" for name in files)


def test_a_failed_start_is_no_dead_end(tmp_path: Path) -> None:
    """A start that failed before its first checkpoint leaves log.csv only: a plain rerun
    starts over, and --resume says what to do instead."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.csv").write_text("epoch,iteration\n")
    with pytest.raises(CheckpointError, match="drop --resume"):
        train(tiny_run_config(out, resume="last"))
    train(tiny_run_config(out, epochs=1))
    assert (out / "last.pt").is_file() and not (out / ".previous-run").exists()


def test_overwrite_and_resume_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--resume .* --overwrite"):
        train(tiny_run_config(tmp_path / "run", overwrite=True, resume="last"))


def _broken_folder_dataset(root: Path) -> Path:
    """images/ + masks/ with one truncated image, 3 classes (classes.txt)."""
    folder_dataset(root, size=32)
    (root / "images" / "im2.png").write_bytes((root / "images" / "im2.png").read_bytes()[:60])
    return root


def test_overwrite_then_a_data_error_keeps_the_old_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny_run_config(out, epochs=1))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and not p.name.startswith(".")}
    data = _broken_folder_dataset(tmp_path / "data")
    config = tiny_run_config(
        out,
        epochs=1,
        overwrite=True,
        dataset=None,
        data=str(data),
        dataset_options={},
        train_split="all",
        val_split="all",
    )
    with pytest.raises(DataError, match="im2.png"):
        train(config)
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert after == before
    assert not (out / ".previous-run").exists()


def test_best_is_written_before_last_and_repaired_from_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    order: list[str] = []
    original = Trainer.save

    def record(self: Trainer, name: str) -> None:
        order.append(name)
        original(self, name)

    monkeypatch.setattr(Trainer, "save", record)
    train(tiny_run_config(out, epochs=1, checkpoint_every=0))
    assert order == ["best.pt", "last.pt"]
    monkeypatch.undo()
    last = read_checkpoint(out / "last.pt")
    assert last["val_miou"] == last["best_miou"]
    (out / "best.pt").unlink()  # as a kill between the writes of an older atrous left it
    result = train(tiny_run_config(out, epochs=1, resume="last"))
    assert read_checkpoint(out / "best.pt")["best_miou"] == last["best_miou"] == result.best_miou


def test_resuming_a_finished_run_says_so_and_tidies_killed_writes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run"
    train(tiny_run_config(out, epochs=2))
    stale = out / ".last.pt.x1y2z3.tmp"
    stale.write_bytes(b"half a checkpoint")
    with caplog.at_level(logging.INFO):
        result = train(tiny_run_config(out, epochs=2, resume="last"))
    assert result.epochs == 2
    assert "all 2 epochs are done" in caplog.text and "epoch 3" not in caplog.text
    assert not stale.exists()


def test_crop_size_below_the_model_minimum_names_the_option_before_creating_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="--crop-size 16"):
        train(tiny_run_config(out, crop_size=16))
    assert not out.exists()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("poly_power", -3, "poly_power must be > 0"),
        ("momentum", 5, "momentum must be in"),
        ("lr", math.inf, "lr must be a finite number"),
        ("num_classes", 0, "num_classes must be"),
    ],
)
def test_bad_optimisation_options_are_refused(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config({key: value})


def test_set_lr_inf_from_the_command_line_is_refused(capsys: pytest.CaptureFixture) -> None:
    from atrous.cli import main

    assert main(["train", "--dataset", "shapes", "--set", "lr=.inf"]) == 2
    assert "lr must be a finite number" in capsys.readouterr().err


def test_a_run_set_aside_by_a_killed_overwrite_comes_back(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny_run_config(out, epochs=1))
    before = (out / "last.pt").read_bytes()
    aside = out / ".previous-run"  # what a kill -9 right after --overwrite's start leaves
    aside.mkdir()
    for name in ("last.pt", "best.pt", "log.csv", "curve.png"):
        (out / name).rename(aside / name)
    (out / "log.csv").write_text("epoch,iteration\n")  # the new run's first write
    result = train(tiny_run_config(out, epochs=2, resume="last"))
    assert result.epochs == 2 and not aside.exists()
    assert read_checkpoint(out / "last.pt")["iteration"] > 0 and before != (out / "last.pt").read_bytes()


def test_resuming_a_differently_built_model_names_the_difference(tmp_path: Path) -> None:
    # Other weight shapes: the config comparison speaks before any key or shape error could.
    out = tmp_path / "run"
    train(tiny_run_config(out, epochs=1))
    with pytest.raises(CheckpointError, match="differently built .*channels: .* in the checkpoint, 32 now"):
        train(tiny_run_config(out, epochs=2, resume="last", model_options={"channels": 32}))


def _lock(out: Path) -> Path:
    from atrous.engine.rundir import LOCK_NAME

    return out / LOCK_NAME


def test_no_lock_file_is_left_by_a_finished_failed_or_interrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import signal

    from atrous.errors import Interrupted

    finished = tmp_path / "finished"
    train(tiny_run_config(finished, epochs=1))
    assert (finished / "last.pt").is_file() and not _lock(finished).exists()

    def fail(self: Trainer) -> dict[str, Any]:
        raise TrainingError("validation failed")

    failed = tmp_path / "failed"
    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "validate", fail)
        with pytest.raises(TrainingError):
            train(tiny_run_config(failed, epochs=1))
    assert failed.is_dir() and not _lock(failed).exists()

    original = Trainer.step

    def step_then_ctrl_c(self: Trainer, images: Any, masks: Any) -> float:
        loss = original(self, images, masks)
        os.kill(os.getpid(), signal.SIGINT)
        return loss

    interrupted = tmp_path / "interrupted"
    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "step", step_then_ctrl_c)
        with pytest.raises(Interrupted):
            train(tiny_run_config(interrupted, epochs=1))
    assert read_checkpoint(interrupted / "last.pt")["iteration"] == 1 and not _lock(interrupted).exists()


def test_a_lock_file_left_by_a_killed_run_is_taken_over_and_removed(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    _lock(out).write_text("12345\n")  # a kill -9 leaves the file; the kernel released its lock
    train(tiny_run_config(out, epochs=1))
    assert (out / "last.pt").is_file() and not _lock(out).exists()


def test_resume_with_only_out_continues_a_run_started_with_overwrite(tmp_path: Path) -> None:
    """The stored settings carry the run's options, not how it was started (--overwrite)."""
    out = tmp_path / "run"
    train(tiny_run_config(out, epochs=1))
    train(tiny_run_config(out, epochs=1, overwrite=True))
    result = train({"out": str(out), "resume": "last", "epochs": 2})
    assert result.epochs == 2 and read_checkpoint(out / "last.pt")["train_config"]["lr"] == 0.01
    with pytest.raises(ConfigError, match="fewer than the 2 epochs"):
        train({"out": str(out), "resume": "last", "epochs": 1})


@pytest.mark.parametrize("overwrite", [True, False])
def test_overwrite_deletes_only_files_atrous_wrote(overwrite: bool, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "best.pt").write_bytes(b"\x89PNG\r\n\x1a\n the user's picture")
    (out / "log.csv").write_text("x")
    with pytest.raises(ConfigError, match="best.pt, log.csv.*nothing was deleted" if overwrite else "already holds"):
        train(tiny_run_config(out, overwrite=overwrite))
    assert (out / "best.pt").read_bytes().startswith(b"\x89PNG") and (out / "log.csv").read_text() == "x"
    assert not (out / ".previous-run").exists()


def test_overwrite_keeps_a_users_own_curve_png_beside_a_real_run(tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "run"
    train(tiny_run_config(out, epochs=1, max_iters=1))
    Image.new("RGB", (8, 8), "red").save(out / "curve.png")  # the user's own picture under the run's name
    with pytest.raises(ConfigError, match="holds curve.png, which atrous did not write.*nothing was deleted"):
        train(tiny_run_config(out, epochs=1, max_iters=1, overwrite=True))
    with Image.open(out / "curve.png") as kept:
        assert kept.size == (8, 8)
    (out / "curve.png").unlink()
    train(tiny_run_config(out, epochs=1, max_iters=1, overwrite=True))  # atrous's own curve is replaced
    train(tiny_run_config(out, epochs=1, max_iters=1, overwrite=True))
    assert (out / "curve.png").is_file() and not (out / ".previous-run").exists()


def test_overwrite_replaces_the_curve_of_a_run_drawn_before_curves_were_marked(tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "run"
    train(tiny_run_config(out, epochs=1, max_iters=1))
    with Image.open(out / "curve.png") as curve:
        curve.convert("RGB").save(out / "curve.png")  # the same pixels without the text chunk, as older runs drew it
    train(tiny_run_config(out, epochs=1, max_iters=1, overwrite=True))
    assert not (out / ".previous-run").exists()


def test_a_failed_start_log_that_is_not_ours_is_kept(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.csv").write_text("name,score\nann,3\n")
    with pytest.raises(ConfigError, match="log.csv, which atrous did not write"):
        train(tiny_run_config(out))
    assert (out / "log.csv").read_text() == "name,score\nann,3\n"


def test_overwrite_replaces_a_real_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny_run_config(out, epochs=1, max_iters=1))
    train(tiny_run_config(out, epochs=1, max_iters=1, overwrite=True))
    assert read_checkpoint(out / "last.pt")["iteration"] > 0 and not (out / ".previous-run").exists()


def test_a_crop_above_the_pixel_limit_is_refused_before_allocating() -> None:
    with pytest.raises(ConfigError, match=r"crop_size \(--crop-size\) is 100000×100000"):
        make_config(crop_size=100000)


def test_masks_without_a_labelled_pixel_are_refused(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    data = folder_dataset(tmp_path / "data", size=32)
    for mask in (data / "masks").glob("*.png"):
        Image.fromarray(np.full((32, 32), 255, dtype=np.uint8)).save(mask)
    config = tiny_run_config(tmp_path / "run", dataset=None, data=str(data), dataset_options={}, train_split="all")
    with pytest.raises(DataError, match="no labelled pixels in the train split .*ignore index 255"):
        train(config)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("inside", ["", "images", "images/run"])
def test_an_out_inside_the_dataset_folder_is_refused(inside: str, tmp_path: Path) -> None:
    data = folder_dataset(tmp_path / "data", size=32)
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    out = data / inside if inside else data
    config = tiny_run_config(out, overwrite=True, dataset=None, data=str(data), dataset_options={}, train_split="all")
    with pytest.raises(ConfigError, match="inside the dataset folder"):
        train(config)
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before


def test_a_run_on_a_relative_data_folder_resumes_and_evaluates_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    data = folder_dataset(work / "data", size=32)
    folder_dataset(elsewhere / "data", size=32, count=2)  # another folder of the same name: must not be used
    monkeypatch.chdir(work)
    config = tiny_run_config(Path("run"), dataset=None, data="data", dataset_options={}, train_split="all", epochs=1)
    train({**config, "val_split": "all"})
    assert read_checkpoint(work / "run" / "last.pt")["train_config"]["data"] == str(data)
    monkeypatch.chdir(elsewhere)
    result = train({"out": str(work / "run"), "resume": "last", "epochs": 2})
    assert result.epochs == 2
