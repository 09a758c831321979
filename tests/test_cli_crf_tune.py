"""`atrous crf-tune`: DeepLab's CRF cross-validation from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atrous.cli import main
from _inference_models import small_model, write_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = small_model("lraspp_mobilenet_v3_small", num_classes=4)
    return write_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "model.pt", ["background", "circle", "rectangle", "triangle"])


def test_crf_tune_prints_every_setting_and_writes_the_best(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "crf.json"
    argv = ["crf-tune", "--checkpoint", str(checkpoint), "--dataset", "shapes", "--images", "2",
            "--samples", "3", "--iterations", "2", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "(no CRF)" in printed and "best:" in printed
    assert len([line for line in printed.splitlines() if line.strip() and line.split()[0].replace(".", "").isdigit()]) == 3
    best = json.loads(out.read_text())
    assert set(best["params"]) >= {"bilateral_compat", "bilateral_sxy", "bilateral_srgb", "iterations"}
    assert best["params"]["iterations"] == 2 and best["images"] == 2
    assert 0.0 <= best["miou"] <= 1.0 and 0.0 <= best["unary_miou"] <= 1.0


def test_crf_tune_rejects_zero_images(checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["crf-tune", "--checkpoint", str(checkpoint), "--dataset", "shapes", "--images", "0"]) == 2
    assert "--images" in capsys.readouterr().err
