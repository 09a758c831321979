"""`--pretrained` with an atrous checkpoint of other classes or another model (fine-tuning)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atrous import create_model
from atrous.checkpoint import save_checkpoint, weights_checkpoint
from atrous.engine.builders import build_model, load_pretrained, pretrained_normalisation
from atrous.engine.config import make_config
from atrous.errors import CheckpointError, ConfigError

SOURCE_OPTIONS = {"aspp_rates": (), "backbone_options": {"width_mult": 0.5, "slim_rates": True}, "align_corners": True}


@pytest.fixture
def voc_like(tmp_path: Path) -> Path:
    """A 21-class checkpoint with imported-model options and TF preprocessing."""
    torch.manual_seed(0)
    model = create_model("deeplabv3_mobilenet_v2", num_classes=21, **SOURCE_OPTIONS)
    metadata = {"class_names": [str(i) for i in range(21)], "palette": [[i, i, i] for i in range(21)],
                "mean": [0.5] * 3, "std": [0.5] * 3, "ignore_index": 255}  # fmt: skip
    return save_checkpoint(weights_checkpoint(model, metadata), tmp_path / "voc.pt")


def test_other_classes_load_everything_but_the_classifier(voc_like: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(model="deeplabv3_mobilenet_v2", pretrained=str(voc_like), dataset="shapes")
    with caplog.at_level("INFO"):
        model = build_model(config, num_classes=3)
    # The architecture comes from the checkpoint: TF-slim rates, α=0.5, align_corners, no atrous ASPP.
    assert model.config["backbone_options"] == SOURCE_OPTIONS["backbone_options"] and model.align_corners
    saved = torch.load(voc_like, weights_only=True)["model"]["state_dict"]
    own = model.state_dict()
    assert own["head.1.weight"].shape[0] == 3
    for key, value in own.items():
        if not key.startswith("head.1."):
            assert torch.equal(value, saved[key]), key
    assert "every weight but the 21-class classifier (head.1.weight, head.1.bias)" in caplog.text


def test_another_model_loads_the_backbone_only(voc_like: Path) -> None:
    model = create_model(
        "deeplabv3plus_mobilenet_v2", num_classes=3, backbone_options=SOURCE_OPTIONS["backbone_options"]
    )
    skipped = load_pretrained(model, torch.load(voc_like, weights_only=True), str(voc_like))
    assert skipped == ["the rest of the deeplabv3_mobilenet_v2 head (backbone only)"]  # its ASPP has 3 more branches
    saved = torch.load(voc_like, weights_only=True)["model"]["state_dict"]
    assert torch.equal(
        model.state_dict()["backbone.features.3.conv.0.0.weight"], saved["backbone.features.3.conv.0.0.weight"]
    )


def test_v3_starts_a_v3plus_with_the_same_aspp(voc_like: Path) -> None:
    """v3 → v3+ with the same ASPP (no atrous branches here): backbone and ASPP load, the decoder is new."""
    model = create_model("deeplabv3plus_mobilenet_v2", num_classes=3, aspp_rates=(),
                         backbone_options=SOURCE_OPTIONS["backbone_options"])  # fmt: skip
    checkpoint = torch.load(voc_like, weights_only=True)
    assert load_pretrained(model, checkpoint, str(voc_like)) == [
        "the rest of the deeplabv3_mobilenet_v2 head (backbone and ASPP)"
    ]
    saved = checkpoint["model"]["state_dict"]
    own = model.state_dict()
    assert torch.equal(own["head.aspp.project.0.weight"], saved["head.0.project.0.weight"])
    assert torch.equal(own["head.aspp.convs.1.1.weight"], saved["head.0.convs.1.1.weight"])  # image pooling
    with pytest.raises(ConfigError, match="another head"):
        load_pretrained(model, checkpoint, str(voc_like), class_map="cityscapes_to_camvid")


def test_incompatible_backbones_are_refused(voc_like: Path) -> None:
    model = create_model("deeplabv3_mobilenet_v2", num_classes=3)  # α = 1: every backbone shape differs
    with pytest.raises(CheckpointError, match="does not fit"):
        load_pretrained(model, torch.load(voc_like, weights_only=True), str(voc_like))


def test_training_uses_the_checkpoints_normalisation(voc_like: Path) -> None:
    config = make_config(model="deeplabv3_mobilenet_v2", pretrained=str(voc_like))
    assert pretrained_normalisation(config) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert pretrained_normalisation(make_config()) is None


def test_class_map_starts_each_new_row_from_its_source(tmp_path: Path) -> None:
    """--pretrained-class-map: the new classifier's rows are copies of the mapped source rows."""
    torch.manual_seed(0)
    source = create_model("deeplabv3_mobilenet_v2", num_classes=4, **SOURCE_OPTIONS)
    metadata = {"class_names": ["road", "car", "truck", "sky"], "palette": [[i, i, i] for i in range(4)],
                "mean": [0.5] * 3, "std": [0.5] * 3, "ignore_index": 255}  # fmt: skip
    path = save_checkpoint(weights_checkpoint(source, metadata), tmp_path / "src.pt")
    class_map = tmp_path / "map.yaml"
    class_map.write_text("map: {sky: Sky, car: Car, truck: Car, road: ignore}\n")
    config = make_config(model="deeplabv3_mobilenet_v2", pretrained=str(path), pretrained_class_map=str(class_map))
    model = build_model(config, num_classes=2, class_names=["Car", "Sky"])
    own, saved = model.state_dict(), source.state_dict()
    for key in ("head.1.weight", "head.1.bias"):
        assert torch.equal(own[key], saved[key][[1, 3]]), key  # Car ← car (first listed), Sky ← sky
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), source.eval()(x)[:, [1, 3]])


def test_class_map_needs_a_source_for_every_class(voc_like: Path, tmp_path: Path) -> None:
    class_map = tmp_path / "map.yaml"
    class_map.write_text("{" + ", ".join(f'"{i}": {"A" if i == 0 else "ignore"}' for i in range(21)) + "}\n")
    config = make_config(model="deeplabv3_mobilenet_v2", pretrained=str(voc_like), pretrained_class_map=str(class_map))
    with pytest.raises(ConfigError, match="maps no source class to B"):
        build_model(config, num_classes=2, class_names=["A", "B"])


def test_without_model_the_checkpoints_model_is_trained(voc_like: Path) -> None:
    """`train --pretrained imported.pt` with no --model fine-tunes that model, not the default v3+
    (whose BN would be frozen at random initialisation)."""
    model = build_model(make_config(pretrained=str(voc_like)), num_classes=3)
    assert model.config["name"] == "deeplabv3_mobilenet_v2"
    assert model.config["backbone_options"] == SOURCE_OPTIONS["backbone_options"]
    assert build_model(make_config(), num_classes=3).config["name"] == "deeplabv3plus_mobilenet_v2"


def test_fine_tuning_defaults_fill_only_the_options_left_unset(voc_like: Path, tmp_path: Path) -> None:
    from _training import folder_dataset

    from atrous.checkpoint import read_checkpoint
    from atrous.data import build_dataset
    from atrous.engine.config import FIELD_NAMES
    from atrous.engine.finetune import FINETUNE_DEFAULTS, NEW_HEAD_LR_MULT, finetune_defaults
    from atrous.engine.trainer import given_options

    train_set = build_dataset("folder", folder_dataset(tmp_path / "data", size=40), "all")
    checkpoint = read_checkpoint(voc_like)
    given = {"pretrained": str(voc_like), "lr": 0.01, "loss": "ce"}  # as the CLI passes them: ce is given
    config = make_config(given)
    unset = frozenset(FIELD_NAMES) - set(given_options(given))
    chosen = finetune_defaults(config, unset, checkpoint, train_set)
    assert "lr" not in chosen and "loss" not in chosen  # the user's
    assert chosen["optimizer"] == FINETUNE_DEFAULTS["optimizer"] == "adamw" and chosen["freeze_bn"] is True
    assert chosen["crop_size"] == (40, 40)  # whole frames
    assert chosen["head_lr_mult"] == NEW_HEAD_LR_MULT  # 21 → 3 classes: a new classifier learns faster
    class_map = tmp_path / "map.yaml"
    class_map.write_text("".join(f"'{i}': {'bg' if i < 7 else 'a' if i < 14 else 'b'}\n" for i in range(21)))
    mapped = make_config(pretrained=str(voc_like), pretrained_class_map=str(class_map))
    assert "head_lr_mult" not in finetune_defaults(
        mapped, unset, checkpoint, train_set
    )  # rows start from their sources
