"""bf16 inference (Predictor(precision="bf16"), eval/predict --precision) and train --precision."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from _inference_models import single_thread, small_model
from PIL import Image

from atrous import Predictor, load_model
from atrous.cli import build_parser, main
from atrous.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
VOC = REPO / "weights" / "voc_deeplabv3_mobilenet_v2.pt"
CITYSCAPES = REPO / "weights" / "cityscapes_deeplabv3_mobilenet_edgetpu.pt"


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    yield from single_thread()


@pytest.mark.skipif(not VOC.is_file(), reason="needs the shipped VOC weights")
def test_bf16_labels_agree_with_fp32_on_a_real_photo() -> None:
    photo = np.asarray(Image.open(REPO / "docs" / "images" / "bird.jpg").convert("RGB"))
    model = load_model(VOC)
    fp32 = Predictor(model, input_size=257).predict_proba(photo)
    bf16 = Predictor(model, input_size=257, precision="bf16").predict_proba(photo)
    assert bf16.dtype == np.float32 and bf16.shape == fp32.shape  # scores come back as float32
    assert (bf16.argmax(0) == fp32.argmax(0)).mean() >= 0.99
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is not cast


def test_bf16_without_fast_casts_a_copy() -> None:
    model = small_model()
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    labels = Predictor(model, fast=False, precision="bf16").predict(image)
    assert labels.shape == (64, 64)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_bf16_is_refused_where_it_cannot_run(tmp_path: Path) -> None:
    from atrous.exporters import export_onnx

    export_onnx(small_model(), tmp_path / "m.onnx", input_size=(64, 64))
    from atrous.exporters import OnnxModel

    with pytest.raises(ConfigError, match="needs a PyTorch model"):
        Predictor(OnnxModel(tmp_path / "m.onnx"), precision="bf16")
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16"):
        Predictor(small_model(), precision="fp8")
    if CITYSCAPES.is_file():  # imported with the graph's uint8 activation grids
        with pytest.raises(ConfigError, match="uint8 grids"):
            Predictor(load_model(CITYSCAPES), precision="bf16")


def test_eval_reports_its_precision(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    from _inference_models import write_checkpoint

    checkpoint = write_checkpoint(small_model(), tmp_path / "m.pt", ["background", "circle", "rectangle", "triangle"])
    argv = [
        "eval",
        "--checkpoint",
        str(checkpoint),
        "--dataset",
        "shapes",
        "--max-images",
        "2",
        "--workers",
        "0",
        "--no-progress",
        "--precision",
        "bf16",
        "--json",
    ]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["precision"] == "bf16" and 0.0 <= result["miou"] <= 1.0


def test_train_precision_names_the_autocast_mode() -> None:
    from atrous.cli.train import config_from_args

    parse = build_parser().parse_args
    assert config_from_args(parse(["train", "--dataset", "shapes", "--precision", "bf16"])).amp == "bf16"
    assert config_from_args(parse(["train", "--dataset", "shapes", "--precision", "fp32"])).amp == "off"
    assert main(["train", "--precision", "fp8"]) == 2


def test_bf16_warns_with_the_measured_speed_where_the_cpu_has_no_amx(monkeypatch: pytest.MonkeyPatch) -> None:
    from atrous import devices

    cpu = torch.device("cpu")
    monkeypatch.setattr(devices, "cpu_has_amx", lambda: True)
    assert devices.bf16_speed_note(cpu, training=False) is None
    assert devices.bf16_speed_note(torch.device("cuda"), training=True) is None
    monkeypatch.setattr(devices, "cpu_has_amx", lambda: False)
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    inference, training = devices.bf16_speed_note(cpu, training=False), devices.bf16_speed_note(cpu, training=True)
    assert "no AMX" in inference and "Predictor ran at 0.63×" in inference
    assert "training step ran at 0.83×" in training
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    assert "no native bfloat16" in devices.bf16_speed_note(cpu, training=False)
