"""TrainConfig: YAML keys, CLI flags, --set overrides, validation errors."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from atrous.cli import build_parser
from atrous.cli.train import _OPTIONS, config_from_args
from atrous.engine.config import (
    FIELD_NAMES,
    TrainConfig,
    load_config_file,
    make_config,
    parse_set_overrides,
)
from atrous.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["train", *argv])


def test_defaults_are_the_papers() -> None:
    config = TrainConfig()
    assert (config.optimizer, config.momentum, config.poly_power) == ("sgd", 0.9, 0.9)
    assert config.crop_size == 513 and config.scale_range == (0.5, 2.0)


def test_unknown_key_lists_valid_ones() -> None:
    with pytest.raises(ConfigError) as error:
        make_config({"batchsize": 4})
    assert "batchsize" in str(error.value) and "batch_size" in str(error.value) and "crop_size" in str(error.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epochs": 0}, "epochs"),
        ({"optimizer": "adam"}, "adamw"),
        ({"output_stride": 4}, "8, 16, 32"),
        ({"bootstrap_ratio": 1.5}, "bootstrap_ratio"),
        ({"lr": "fast"}, "lr must be of type float"),
        ({"batch_size": True}, "batch_size must be of type int"),
        ({"scale_range": [2.0, 1.0]}, "scale_range"),
        ({"dataset": "no-such-layout"}, "shapes"),
        ({"model_options": 3}, "mapping"),
    ],
)
def test_bad_values_raise_config_error(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config(values)


def test_yaml_then_flags_then_set(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("dataset: shapes\nepochs: 7\nlr: 0.02\nmodel_options: {dropout: 0.2}\nclass_weights: [1, 2]\n")
    args = _parse(
        "--config",
        str(recipe),
        "--epochs",
        "3",
        "--amp",
        "--freeze-bn",
        "--set",
        "lr=0.5",
        "--set",
        "model_options.separable=false",
        "--set",
        "dataset_options.size=48",
    )
    config = config_from_args(args)
    assert (config.epochs, config.lr, config.amp, config.freeze_bn) == (3, 0.5, "fp16", True)
    assert config.model_options == {"dropout": 0.2, "separable": False}
    assert config.dataset_options == {"size": 48}
    assert config.class_weights == "1,2"
    assert config.resume is None and config.workers == 4  # untouched defaults


def test_every_flag_maps_to_a_field_and_resume_defaults_to_last() -> None:
    assert {name for _, name, _, _ in _OPTIONS} <= set(FIELD_NAMES)
    assert config_from_args(_parse("--dataset", "shapes", "--resume")).resume == "last"
    assert config_from_args(_parse("--dataset", "shapes", "--resume", "x.pt")).resume == "x.pt"
    required = {
        "data",
        "dataset",
        "model",
        "epochs",
        "batch_size",
        "crop_size",
        "lr",
        "output_stride",
        "out",
        "resume",
        "seed",
        "workers",
        "optimizer",
        "weight_decay",
        "warmup_iters",
        "head_lr_mult",
        "class_weights",
        "loss",
        "bootstrap_ratio",
        "aux_loss_weight",
        "amp",
        "clip_grad",
        "freeze_bn",
        "val_every",
        "device",
        "max_iters",
        "pretrained",
        "checkpoint_every",
    }
    assert required <= {name for _, name, _, _ in _OPTIONS}


def test_set_values_are_read_as_yaml_and_must_be_key_value() -> None:
    assert parse_set_overrides(["a=1", "b=0.5", "c=true", "d=x,y", "e="]) == {
        "a": 1,
        "b": 0.5,
        "c": True,
        "d": "x,y",
        "e": None,
    }
    with pytest.raises(ConfigError, match="key=value"):
        parse_set_overrides(["lr"])
    with pytest.raises(ConfigError, match="dotted"):
        make_config({"lr.x": 1})


def test_config_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config_file(bad)


def test_shipped_recipes_are_valid() -> None:
    recipes = sorted((REPO / "configs").glob("*.yaml"))
    assert recipes, "configs/ holds no recipes"
    for recipe in recipes:
        config = make_config(load_config_file(recipe))
        assert dataclasses.asdict(config)


def test_to_dict_round_trips() -> None:
    config = make_config({"dataset": "shapes", "scale_range": [0.75, 1.25], "model_options": {"dropout": 0.0}})
    assert make_config(config.to_dict()) == config


def test_rectangular_crops_from_yaml_and_the_command_line(tmp_path) -> None:
    import argparse

    from atrous.cli.train import config_from_args, register
    from atrous.engine.config import make_config

    assert make_config(crop_size=[360, 480]).crop_hw == (360, 480)
    assert make_config(crop_size=[360, 480]).to_dict()["crop_size"] == [360, 480]
    assert make_config(crop_size=288).crop_hw == (288, 288)
    with pytest.raises(ConfigError, match="crop_size"):
        make_config(crop_size=[0, 480])
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    assert config_from_args(parser.parse_args(["train", "--crop-size", "360", "480"])).crop_size == (360, 480)
    with pytest.raises(ConfigError, match="--crop-size"):
        config_from_args(parser.parse_args(["train", "--crop-size", "1", "2", "3"]))
