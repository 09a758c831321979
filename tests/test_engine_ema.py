"""``--ema``: the weight average follows its ramped decay, is what a run validates and
saves, and a checkpoint carries the training weights to resume from."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from _inference_models import single_thread
from _training import tiny_run_config
from torch import nn

import atrous
from atrous import Predictor
from atrous.checkpoint import read_checkpoint, save_weights_only
from atrous.data import build_dataset
from atrous.engine import distributed, train
from atrous.engine.config import make_config
from atrous.engine.ema import WeightAverage
from atrous.engine.trainer import Trainer
from atrous.errors import ConfigError
from atrous.metrics import ConfusionMatrix


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    yield from single_thread()


def _block() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3))


def test_average_follows_the_ramped_decay() -> None:
    model = _block()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    average = WeightAverage(model, decay=0.9)
    assert not any(p.requires_grad for p in average.model.parameters()) and not average.model.training
    with torch.no_grad():
        for value in model.state_dict().values():
            value.add_(1)  # weights, running stats and num_batches_tracked all move by 1
    average.update(model)
    # First update: decay min(0.9, 1/10) = 0.1, so the average moves 90 % of the way.
    weight = average.model.state_dict()["0.weight"]
    torch.testing.assert_close(weight, start["0.weight"] + 0.9)
    torch.testing.assert_close(average.model.state_dict()["1.running_var"], start["1.running_var"] + 0.9)
    assert average.model.state_dict()["1.num_batches_tracked"] == start["1.num_batches_tracked"] + 1  # copied
    average.update(model)
    # Second: decay 2/11; the gap of 0.1 shrinks to 0.1 · 2/11.
    torch.testing.assert_close(average.model.state_dict()["0.weight"], start["0.weight"] + 1 - 0.1 * 2 / 11)
    for _ in range(200):
        average.update(model)
    assert average.current_decay() == 0.9
    torch.testing.assert_close(average.model.state_dict()["0.weight"], model.state_dict()["0.weight"])
    torch.testing.assert_close(model.state_dict()["0.weight"], start["0.weight"] + 1)  # the model is untouched


@pytest.mark.parametrize("decay", [-0.1, 1.0, 2.0])
def test_decay_outside_zero_one_is_a_config_error(decay: float) -> None:
    with pytest.raises(ConfigError, match="ema"):
        make_config({"ema": decay})


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Any:
    return train(tiny_run_config(tmp_path_factory.mktemp("ema") / "run", ema=0.5, epochs=2))


def test_checkpoint_model_is_the_average_and_ema_holds_the_training_weights(ema_run: Any) -> None:
    checkpoint = read_checkpoint(ema_run.last_checkpoint)
    assert checkpoint["ema"]["decay"] == 0.5 and checkpoint["ema"]["updates"] == 4
    averaged, trained = checkpoint["model"]["state_dict"], checkpoint["ema"]["train_state_dict"]
    assert averaged.keys() == trained.keys()
    differ = [k for k, v in averaged.items() if v.is_floating_point() and not torch.equal(v, trained[k])]
    assert differ, "the average equals the training weights"
    slim = read_checkpoint(save_weights_only(ema_run.last_checkpoint, ema_run.run_dir / "weights.pt"))
    assert "ema" not in slim
    for key, value in averaged.items():
        assert torch.equal(slim["model"]["state_dict"][key], value), key


def test_validation_runs_the_average_not_the_training_weights(tmp_path: Path) -> None:
    config = make_config(tiny_run_config(tmp_path / "run", ema=0.5))
    context = distributed.init_distributed(config.device)
    trainer = Trainer(config, context)
    try:
        average = trainer.state.ema.model
        with torch.no_grad():  # make the average say "class 2" everywhere
            for name, value in average.named_parameters():
                if name.endswith("bias") and value.shape == (3,):
                    value.copy_(torch.tensor([-1e3, -1e3, 1e3]))
        metrics = trainer.validate()
    finally:
        trainer.runlog.close()
        trainer.close_folder(failed=True)
        distributed.shutdown(context)
    iou = metrics["iou"]
    assert iou[0] == 0 and iou[1] == 0 and 0 < iou[2] == pytest.approx(metrics["pixel_accuracy"])


def test_eval_of_the_saved_file_reproduces_the_validation(ema_run: Any) -> None:
    checkpoint = read_checkpoint(ema_run.last_checkpoint)
    options = tiny_run_config(Path("unused"))["dataset_options"]
    dataset = build_dataset("shapes", None, "val", **options)
    predictor = Predictor(atrous.load_model(ema_run.last_checkpoint))
    matrix = ConfusionMatrix(3)
    for index in range(len(dataset)):
        image, mask = dataset[index]
        matrix.update(predictor.predict(image), mask)
    assert matrix.compute()["miou"] == pytest.approx(checkpoint["val_miou"], abs=1e-6)


def test_resume_restores_average_and_training_weights(ema_run: Any, tmp_path: Path) -> None:
    extended = train(tiny_run_config(ema_run.run_dir, ema=0.5, epochs=3, resume="last"))
    checkpoint = read_checkpoint(extended.last_checkpoint)
    assert checkpoint["iteration"] == 6 and checkpoint["ema"]["updates"] == 6


def test_ema_run_from_a_plain_checkpoint_starts_the_average_there(tmp_path: Path) -> None:
    plain = train(tiny_run_config(tmp_path / "plain", epochs=1, val_every=0))
    resumed = train(tiny_run_config(tmp_path / "plain", ema=0.5, epochs=2, val_every=0, resume="last"))
    checkpoint = read_checkpoint(resumed.last_checkpoint)
    assert checkpoint["ema"]["updates"] == 2
    model = atrous.load_model(plain.last_checkpoint)
    assert model.config == checkpoint["model"]["config"]
