"""End-to-end training on tiny synthetic shapes: outputs, determinism, errors, options."""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from _training import TINY_MODEL, tiny_run_config

import atrous
from atrous.checkpoint import read_checkpoint
from atrous.engine import train
from atrous.engine.builders import build_optimizer
from atrous.engine.config import make_config
from atrous.engine.losses import SegmentationLoss
from atrous.errors import CheckpointError, ConfigError, DataError, TrainingError
from atrous.models import create_model

MODEL = TINY_MODEL


def _config(out: Path, **overrides: Any) -> dict[str, Any]:
    return tiny_run_config(out, **overrides)


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    torch.set_num_threads(1)
    return train(_config(tmp_path_factory.mktemp("run") / "run"))


def test_run_writes_checkpoints_and_log(run: Any) -> None:
    assert run.epochs == 2 and run.iterations == 4
    assert run.last_checkpoint.is_file() and run.best_checkpoint.is_file()
    assert 0 <= run.best_miou <= 1 and len(run.metrics["iou"]) == 3
    with (run.run_dir / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["epoch", "iteration", "train_loss", "lr", "val_miou", "val_pixel_accuracy", "time"]
    assert [(r["epoch"], r["iteration"]) for r in rows] == [("1", "2"), ("2", "4")]
    assert float(rows[-1]["val_miou"]) == pytest.approx(run.metrics["miou"], abs=1e-5)
    checkpoint = read_checkpoint(run.last_checkpoint)
    assert (checkpoint["epoch"], checkpoint["iteration"]) == (2, 4)
    assert checkpoint["train_config"]["model"] == MODEL and checkpoint["scheduler"]["last_epoch"] == 4
    model = atrous.load_model(run.best_checkpoint)
    assert model.class_names == ["background", "circle", "rectangle"] and model.config["num_classes"] == 3


def test_run_draws_its_training_curve(run: Any) -> None:
    from PIL import Image

    from atrous.engine.curve import read_curve

    series = read_curve(run.run_dir / "log.csv")
    assert [epoch for epoch, _ in series["train loss"]] == [1.0, 2.0]
    assert series["val mIoU (%)"][-1][1] == pytest.approx(100 * run.metrics["miou"], abs=1e-3)
    with Image.open(run.run_dir / "curve.png") as picture:
        assert picture.format == "PNG" and picture.size[0] > picture.size[1] > 200
        pixels = picture.convert("RGB")
        colors = {pixels.getpixel((x, y)) for x in range(0, picture.size[0], 3) for y in range(0, picture.size[1], 3)}
    assert (31, 119, 180) in colors and (214, 39, 40) in colors  # both series were drawn


def test_curve_of_a_file_that_is_not_a_log_is_a_data_error(tmp_path: Path) -> None:
    from atrous.engine.curve import plot_training_curve

    bogus = tmp_path / "log.csv"
    bogus.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="not an atrous log.csv"):
        plot_training_curve(bogus, tmp_path / "curve.png")
    with pytest.raises(DataError, match="cannot read"):
        plot_training_curve(tmp_path / "missing.csv", tmp_path / "curve.png")


def test_same_seed_same_weights(run: Any, tmp_path: Path) -> None:
    again = train(_config(tmp_path / "again"))
    first = read_checkpoint(run.last_checkpoint)["model"]["state_dict"]
    second = read_checkpoint(again.last_checkpoint)["model"]["state_dict"]
    assert all(torch.equal(first[k], second[k]) for k in first)
    other_seed = train(_config(tmp_path / "seed1", seed=1, epochs=1, val_every=0))
    third = read_checkpoint(other_seed.last_checkpoint)["model"]["state_dict"]
    assert not all(torch.equal(first[k], third[k]) for k in first)


def test_validation_table_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="atrous"):
        train(_config(tmp_path / "r", epochs=1, amp="fp16"))
    text = caplog.text
    assert "circle" in text and "mIoU" in text and "pixel acc" in text
    assert "fp16 needs CUDA" in text


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real_forward = SegmentationLoss.forward

    def forward(self: SegmentationLoss, output: Any, target: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        loss = real_forward(self, output, target)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(SegmentationLoss, "forward", forward)
    out = tmp_path / "nan"
    with pytest.raises(TrainingError, match=r"loss is nan at epoch 2, iteration 3.*last\.pt is untouched"):
        train(_config(out, checkpoint_every=1))
    checkpoint = read_checkpoint(out / "last.pt")
    assert checkpoint["iteration"] == 2 and all(
        torch.isfinite(v).all() for v in checkpoint["model"]["state_dict"].values() if v.is_floating_point()
    )


def test_bad_run_folders_are_refused_without_writing(run: Any, tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("keep me")
    with pytest.raises(ConfigError, match="is a file"):
        train(_config(a_file))
    assert a_file.read_text() == "keep me"
    before = run.last_checkpoint.read_bytes()
    with pytest.raises(ConfigError, match="already holds a run"):
        train(_config(run.run_dir))
    with pytest.raises(CheckpointError, match=r"lraspp_mobilenet_v3_small with 3 classes.*lraspp_mobilenet_v2"):
        train(_config(run.run_dir, model="lraspp_mobilenet_v2", resume="last"))
    with pytest.raises(CheckpointError, match="iterations per epoch"):
        train(_config(run.run_dir, batch_size=2, resume="last"))
    assert run.last_checkpoint.read_bytes() == before
    with pytest.raises(CheckpointError, match="does not exist"):
        train(_config(tmp_path / "fresh", resume="last"))


def test_missing_or_empty_data_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for data in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises((DataError, ConfigError)) as error:
            train(_config(tmp_path / "out", dataset=None, data=str(data)))
        assert str(data) in str(error.value)
    assert not (tmp_path / "out").exists()


def test_freeze_bn_keeps_statistics_and_affine(tmp_path: Path) -> None:
    result = train(_config(tmp_path / "frozen", freeze_bn=True, epochs=1, val_every=0))
    trained = read_checkpoint(result.last_checkpoint)["model"]["state_dict"]
    torch.manual_seed(0)
    initial = create_model(MODEL, num_classes=3).state_dict()
    bn_keys = [
        k
        for k in trained
        if k.rsplit(".", 1)[-1] in ("running_mean", "running_var", "weight", "bias")
        and k.rsplit(".", 1)[0] + ".running_mean" in trained
    ]
    conv_keys = [k for k in trained if k.endswith(".weight") and k not in bn_keys]
    assert bn_keys and all(torch.equal(trained[k], initial[k]) for k in bn_keys)
    assert any(not torch.equal(trained[k], initial[k]) for k in conv_keys)


def test_every_loss_and_optimizer_option_runs_and_takes_effect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from atrous.data import median_frequency_weights
    from atrous.engine import distributed
    from atrous.engine.trainer import Trainer

    options = dict(
        model="deeplabv3plus_mobilenet_v2",
        epochs=1,
        optimizer="adamw",
        lr=1e-3,
        warmup_iters=2,
        head_lr_mult=10.0,
        loss="bootstrap",
        bootstrap_ratio=0.5,
        class_weights="median-freq",
        aux_loss_weight=0.4,
        clip_grad=1.0,
        amp="bf16",
        scale_range=(0.5, 1.5),
    )
    result = train(_config(tmp_path / "options", **options))
    model = atrous.load_model(result.last_checkpoint)
    assert model.config["aux_loss"] is True and model.aux_head is not None
    saved = read_checkpoint(result.last_checkpoint)["train_config"]
    assert {k: saved[k] for k in options} == {**options, "scale_range": [0.5, 1.5]}

    # Each option as the trainer holds it, on a run built the same way.
    config = make_config(_config(tmp_path / "built", **options))
    context = distributed.init_distributed(config.device)
    trainer = Trainer(config, context)
    try:
        assert isinstance(trainer.optimizer, torch.optim.AdamW)
        assert sorted({g["initial_lr"] for g in trainer.optimizer.param_groups}) == [1e-3, 1e-2]  # head ×10
        assert trainer.scheduler.warmup_iters == 2
        loss = trainer.criterion
        assert loss.bootstrap_ratio == 0.5 and loss.aux_weight == 0.4
        train_set = trainer.data.train_set
        torch.testing.assert_close(loss.class_weights, median_frequency_weights(train_set, 3, train_set.ignore_index))
        assert trainer.amp_dtype == torch.bfloat16
        scale = trainer.data.train_set.transform.pipeline.transforms[0]
        assert scale.scale_range == (0.5, 1.5)
        clipped: list[float] = []
        real_clip = torch.nn.utils.clip_grad_norm_
        monkeypatch.setattr(
            torch.nn.utils,
            "clip_grad_norm_",
            lambda params, max_norm, **kw: clipped.append(max_norm) or real_clip(params, max_norm, **kw),
        )
        trainer.step(*next(iter(trainer.data.train_loader)))
        assert clipped == [1.0]
    finally:
        trainer.runlog.close()
        trainer.close_folder(failed=True)
        distributed.shutdown(context)
    with pytest.raises(ConfigError, match="one per class"):
        train(_config(tmp_path / "w", class_weights="1,2"))


def test_enet_class_weights_reach_the_loss(tmp_path: Path) -> None:
    from atrous.data import build_dataset, enet_weights
    from atrous.engine.builders import build_loss

    config = make_config(_config(tmp_path / "enet", class_weights="enet"))
    train_set = build_dataset("shapes", None, "train", **config.dataset_options)
    loss = build_loss(config, train_set)
    torch.testing.assert_close(loss.class_weights, enet_weights(train_set, 3, train_set.ignore_index))


def test_parameter_groups_get_head_multiplier_and_decay_on_weights_only() -> None:
    model = create_model(MODEL, num_classes=3)
    config = make_config(_config(Path("unused"), lr=0.1, head_lr_mult=10.0, weight_decay=1e-4))
    groups = build_optimizer(config, model).param_groups
    assert {(g["lr"], g["weight_decay"]) for g in groups} == {(0.1, 1e-4), (0.1, 0.0), (1.0, 1e-4), (1.0, 0.0)}
    assert all(p.dim() > 1 for g in groups if g["weight_decay"] for p in g["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_pretrained_atrous_checkpoint_initialises_the_model(run: Any, tmp_path: Path) -> None:
    result = train(
        _config(
            tmp_path / "finetune",
            pretrained=str(run.best_checkpoint),
            output_stride=8,
            freeze_bn=True,
            epochs=1,
            max_iters=1,
            val_every=0,
        )
    )
    assert read_checkpoint(result.last_checkpoint)["model"]["config"]["output_stride"] == 8


def test_weights_only_copy_loads_the_same_model_and_refuses_resume(run: Any, tmp_path: Path) -> None:
    from atrous.checkpoint import save_weights_only

    slim = save_weights_only(run.best_checkpoint, tmp_path / "weights.pt")
    half = save_weights_only(run.best_checkpoint, tmp_path / "weights16.pt", half=True)
    assert slim.stat().st_size < run.best_checkpoint.stat().st_size
    assert half.stat().st_size < slim.stat().st_size
    checkpoint = read_checkpoint(slim)
    assert checkpoint["weights_only"] and "optimizer" not in checkpoint and "rng" not in checkpoint
    x = torch.randn(1, 3, 32, 32)
    full, light, light16 = (atrous.load_model(p) for p in (run.best_checkpoint, slim, half))
    assert light.class_names == full.class_names
    with torch.no_grad():
        torch.testing.assert_close(light(x), full(x), atol=0, rtol=0)
        torch.testing.assert_close(light16(x), full(x), atol=0.05, rtol=0.05)
    with pytest.raises(CheckpointError, match="weights only"):
        train(_config(tmp_path / "again", resume=str(slim), epochs=3))


def test_the_start_line_names_the_cpu_thread_settings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A run far slower than expected on a shared machine shows why: threads and the OpenMP policy."""
    with caplog.at_level(logging.INFO, logger="atrous"):
        train(tiny_run_config(tmp_path / "run", epochs=1))
    assert re.search(r"on cpu \(\d+ torch threads, OMP_WAIT_POLICY=\w+, GOMP_SPINCOUNT=\w+\)", caplog.text)


def test_a_busy_machine_is_named_at_the_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other processes holding every core (the OS's load average says so) get one warning."""
    import os

    cores = os.cpu_count() or 1
    monkeypatch.setattr(os, "getloadavg", lambda: (cores + 1.0, cores, cores))
    with caplog.at_level(logging.INFO, logger="atrous"):
        train(tiny_run_config(tmp_path / "run", epochs=1))
    assert f"the CPUs are already busy (load average {cores + 1.0:.1f} on {cores} cores)" in caplog.text
