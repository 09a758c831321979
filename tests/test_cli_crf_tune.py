"""`atrous crf-tune`: DeepLab's CRF cross-validation from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _inference_models import blurred_colour_case, small_model, write_checkpoint

from atrous.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = small_model("lraspp_mobilenet_v3_small", num_classes=4)
    return write_checkpoint(
        model, tmp_path_factory.mktemp("ckpt") / "model.pt", ["background", "circle", "rectangle", "triangle"]
    )


def test_crf_tune_prints_every_setting_and_writes_the_best(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root, model = blurred_colour_case(tmp_path / "data")
    out = tmp_path / "crf.json"
    argv = [
        "crf-tune",
        "--checkpoint",
        str(model),
        "--data",
        str(root),
        "--split",
        "all",
        "--images",
        "2",
        "--samples",
        "3",
        "--iterations",
        "5",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "(no CRF)" in printed and "best:" in printed
    assert (
        len([line for line in printed.splitlines() if line.strip() and line.split()[0].replace(".", "").isdigit()]) == 3
    )
    best = json.loads(out.read_text())
    assert set(best["params"]) >= {"bilateral_compat", "bilateral_sxy", "bilateral_srgb", "iterations"}
    assert best["params"]["iterations"] == 5 and best["images"] == 2
    assert 0.0 <= best["unary_miou"] < 0.9 and best["miou"] > best["unary_miou"] + 0.1  # the blurred edge is fixed


def test_crf_tune_rejects_zero_images(checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["crf-tune", "--checkpoint", str(checkpoint), "--dataset", "shapes", "--images", "0"]) == 2
    assert "--images" in capsys.readouterr().err


def _folder(root: Path, mask_values: list[int], size: int = 48) -> Path:
    """images/ + masks/ with two images, each mask filled left/right with the given values."""
    import numpy as np
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for index in range(2):
        picture = np.zeros((size, size, 3), np.uint8)
        picture[:, size // 2 :] = (200, 60 + 80 * index, 30)
        Image.fromarray(picture).save(root / "images" / f"im{index}.png")
        mask = np.full((size, size), mask_values[0], np.uint8)
        mask[:, size // 2 :] = mask_values[-1]
        Image.fromarray(mask).save(root / "masks" / f"im{index}.png")
    return root


def test_crf_tune_uses_the_models_class_count_on_a_folder(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # masks show classes 0 and 1 only; the model has 4: eval's rule (the model's count) holds here too
    root = _folder(tmp_path / "data", [0, 1])
    code = main(
        [
            "crf-tune",
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(root),
            "--split",
            "all",
            "--images",
            "2",
            "--samples",
            "2",
            "--iterations",
            "1",
            "--device",
            "cpu",
        ]
    )
    captured = capsys.readouterr()
    assert code in (0, 1), captured.err  # 1: no setting beat the model alone (said on stderr)
    assert "tuning the CRF on 2 all images" in captured.out
    assert "--num-classes" not in captured.err and "Traceback" not in captured.err


def test_crf_tune_refuses_a_dataset_of_another_class_count_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    eleven = write_checkpoint(small_model(num_classes=11), tmp_path / "eleven.pt")
    assert (
        main(["crf-tune", "--checkpoint", str(eleven), "--dataset", "shapes", "--images", "1", "--device", "cpu"]) == 2
    )
    captured = capsys.readouterr()
    assert "predicts 11 classes but the dataset has 4" in captured.err and "tuning" not in captured.out


def test_crf_tune_never_saves_a_crf_worse_than_none(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import torch

    model = small_model(num_classes=4)
    with torch.no_grad():  # a model that always says class 0, on masks that are all class 0: perfect alone
        for conv in (m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels == 4):
            conv.bias[0] += 100.0
    perfect = write_checkpoint(model, tmp_path / "perfect.pt")
    root = _folder(tmp_path / "data", [0])
    out = tmp_path / "crf.json"
    code = main(
        [
            "crf-tune",
            "--checkpoint",
            str(perfect),
            "--data",
            str(root),
            "--split",
            "all",
            "--images",
            "2",
            "--samples",
            "2",
            "--iterations",
            "1",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "no CRF setting beat the model alone" in err and f"nothing written to {out}" in err
    assert not out.exists()


def test_crf_tune_refuses_a_model_that_outputs_labels(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from atrous.exporters import export_onnx

    export_onnx(small_model(), tmp_path / "labels.onnx", input_size=(64, 64), argmax=True)
    code = main(["crf-tune", "--checkpoint", str(tmp_path / "labels.onnx"), "--dataset", "shapes", "--images", "1"])
    assert code == 2
    assert "outputs labels" in capsys.readouterr().err


def test_a_tuned_crf_written_beside_the_model_is_what_crf_and_atrous_open_use(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import atrous

    root, model = blurred_colour_case(tmp_path / "data")
    beside = model.with_name(model.stem + ".crf.json")  # blurred_colour.onnx → blurred_colour.crf.json
    data = ["--data", str(root), "--split", "all"]
    assert (
        main(
            [
                "crf-tune",
                "--checkpoint",
                str(model),
                *data,
                "--images",
                "2",
                "--samples",
                "2",
                "--iterations",
                "3",
                "--out",
                str(beside),
            ]
        )
        == 0
    )
    tuned = json.loads(beside.read_text())
    assert atrous.open(model).crf_params == tuned["params"]
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(model), *data, "--crf", "--json", "--workers", "0", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["crf"] == tuned["params"] and result["miou"] == pytest.approx(tuned["miou"])
