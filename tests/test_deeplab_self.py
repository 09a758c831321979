"""A DeepLab describes itself: num_classes from the head, one frozen metadata record.

A hand-built ``DeepLab(backbone, head)`` works where a registered model does (Predictor,
ONNX export); checkpoints and ``with_output_stride`` carry the metadata as one object.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from atrous.checkpoint import load_model, save_checkpoint, weights_checkpoint
from atrous.deeplab import DeepLab, ModelMetadata, head_num_classes
from atrous.errors import ConfigError
from atrous.heads import LargeFOV, LRASPPHead
from atrous.models import create_model, with_output_stride
from atrous.registry import create_backbone


def _hand_built() -> DeepLab:
    torch.manual_seed(0)
    backbone = create_backbone("mobilenet_v3_small", output_stride=16)
    info = backbone.feature_info
    head = LRASPPHead(info["out"].channels, info["mid"].channels, 4)
    return DeepLab(backbone, head, head_inputs=("out", "mid")).eval()


def test_hand_built_model_knows_its_class_count() -> None:
    model = _hand_built()
    assert model.config == {} and model.num_classes == 4
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 4, 64, 64)
    assert not hasattr(model, "class_names") and getattr(model, "mean", None) is None


def test_num_classes_from_any_head_or_given() -> None:
    assert head_num_classes(LargeFOV(16, 5, msc_inputs=((3, 8),))) == 5  # last conv is an MSc branch's
    plain = nn.Sequential(nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 6, 1))
    assert head_num_classes(plain) == 6
    backbone = create_backbone("mobilenet_v3_small", output_stride=16)
    assert DeepLab(backbone, plain, num_classes=6).num_classes == 6
    with pytest.raises(ConfigError, match="num_classes"):
        DeepLab(backbone, nn.Identity())


def test_hand_built_model_runs_through_the_predictor() -> None:
    from atrous.inference import Predictor

    model = _hand_built()
    labels = Predictor(model).predict(np.zeros((50, 70, 3), np.uint8))
    assert labels.shape == (50, 70) and 0 <= labels.min() and labels.max() < 4
    probs = Predictor(model, scales=(0.75, 1.0), flip=True).predict_proba(np.zeros((50, 70, 3), np.uint8))
    assert probs.shape == (4, 50, 70)


def test_hand_built_model_exports_to_onnx(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from atrous.exporters import export_onnx

    model = _hand_built()
    model.class_names = ["a", "b", "c", "d"]
    report = export_onnx(model, tmp_path / "hand.onnx", input_size=(64, 64))
    assert report.argmax_agreement >= 0.9999 and (tmp_path / "hand.onnx").is_file()
    from atrous.exporters.runtime import OnnxModel

    exported = OnnxModel(tmp_path / "hand.onnx")
    assert exported.num_classes == 4 and exported.class_names == ["a", "b", "c", "d"]
    assert exported(torch.zeros(1, 3, 64, 64)).shape == (1, 4, 64, 64)


def test_metadata_is_one_frozen_record_that_checkpoints_round_trip(tmp_path: Path) -> None:
    model = create_model("lraspp_mobilenet_v3_small", num_classes=3)
    assert model.metadata is None and model.num_classes == 3
    model.metadata = ModelMetadata(
        class_names=["x", "y", "z"], palette=[[1, 2, 3]] * 3, mean=[0.5] * 3, std=[0.25] * 3, ignore_index=7
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.metadata.ignore_index = 0  # type: ignore[misc]
    assert model.class_names == ["x", "y", "z"] and model.palette == [(1, 2, 3)] * 3
    assert model.mean == (0.5, 0.5, 0.5) and model.std == (0.25,) * 3 and model.ignore_index == 7
    path = save_checkpoint(weights_checkpoint(model, {}), tmp_path / "m.pt")  # metadata from the model itself
    loaded = load_model(path)
    assert loaded.metadata == model.metadata
    moved = with_output_stride(loaded, 8)
    assert moved.metadata is loaded.metadata and moved.output_stride == 8
    model.class_names = ["p", "q", "r"]  # the setter replaces the record, compatible with attribute writes
    assert model.metadata.class_names == ("p", "q", "r") and model.metadata.ignore_index == 7


def test_with_output_stride_refuses_a_model_without_config() -> None:
    with pytest.raises(ConfigError, match="hand-built"):
        with_output_stride(_hand_built(), 8)
