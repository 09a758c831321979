"""Checkpoints: atomic writes, weights_only reads, RNG states, load_model, clear errors."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import atrous
from atrous.checkpoint import FORMAT, load_model, read_checkpoint, save_checkpoint
from atrous.engine.rng import rng_state, set_rng_state
from atrous.errors import CheckpointError
from atrous.models import create_model

MODEL = "lraspp_mobilenet_v3_small"


def _checkpoint(model: torch.nn.Module) -> dict:
    return {
        "format": FORMAT,
        "version": 1,
        "model": {"config": dict(model.config), "state_dict": model.state_dict()},
        "class_names": ["bg", "a", "b"],
        "palette": [[0, 0, 0], [255, 0, 0], [0, 255, 0]],
        "ignore_index": 255,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "rng": rng_state(),
        "epoch": 1,
        "iteration": 7,
        "best_miou": float("nan"),
    }


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(MODEL, num_classes=3)


def test_save_is_atomic_and_weights_only_loadable(tmp_path: Path, model: torch.nn.Module) -> None:
    path = save_checkpoint(_checkpoint(model), tmp_path / "last.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind
    loaded = torch.load(path, weights_only=True)
    assert loaded["iteration"] == 7 and loaded["class_names"] == ["bg", "a", "b"]


def test_failed_save_keeps_the_previous_file(tmp_path: Path, model: torch.nn.Module) -> None:
    path = save_checkpoint(_checkpoint(model), tmp_path / "last.pt")
    before = path.read_bytes()
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        save_checkpoint({"format": FORMAT, "bad": lambda: None}, path)  # not picklable
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_rng_states_round_trip() -> None:
    state = rng_state()
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    random.random(), np.random.rand(), torch.rand(3)
    set_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected


def test_load_model_rebuilds_with_metadata(tmp_path: Path, model: torch.nn.Module) -> None:
    path = save_checkpoint(_checkpoint(model), tmp_path / "m.pt")
    loaded = atrous.load_model(path)
    assert not loaded.training
    assert loaded.class_names == ["bg", "a", "b"] and loaded.palette[1] == (255, 0, 0)
    assert loaded.mean == (0.5, 0.5, 0.5) and loaded.std == (0.25, 0.25, 0.25) and loaded.ignore_index == 255
    x = torch.randn(1, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_checkpoint_of_another_model_names_both(tmp_path: Path, model: torch.nn.Module) -> None:
    path = save_checkpoint(_checkpoint(model), tmp_path / "m.pt")
    other_classes = create_model(MODEL, num_classes=5)
    with pytest.raises(CheckpointError, match=r"lraspp_mobilenet_v3_small with 3 classes.*with 5 classes"):
        load_model(path, model=other_classes)
    other_model = create_model("lraspp_mobilenet_v2", num_classes=3)
    with pytest.raises(CheckpointError, match=r"lraspp_mobilenet_v3_small.*lraspp_mobilenet_v2"):
        load_model(path, model=other_model)


def test_corrupt_and_foreign_files_are_refused(tmp_path: Path, model: torch.nn.Module) -> None:
    good = save_checkpoint(_checkpoint(model), tmp_path / "m.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:1000])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    foreign = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, foreign)
    for path, message in [
        (truncated, "not a readable checkpoint"),
        (garbage, "not a PyTorch checkpoint file \\(it looks like text\\)"),
        (foreign, "not an atrous checkpoint"),
        (tmp_path / "missing.pt", "does not exist"),
    ]:
        with pytest.raises(CheckpointError, match=message) as error:
            read_checkpoint(path)
        assert str(path) in str(error.value)


def test_pickled_objects_are_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "payload": Path("/etc/passwd")}, path)  # arbitrary class
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint(path)
