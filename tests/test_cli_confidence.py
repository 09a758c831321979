"""``atrous predict --confidence`` and ``atrous eval``'s calibration through ``atrous.cli.main``:
the files written, their values against the library's, and the refusals."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from _inference_models import single_thread, small_model, tiny_net, write_checkpoint, write_shapes_images
from PIL import Image

import atrous
from atrous import Predictor
from atrous.checkpoint import load_model
from atrous.cli import main
from atrous.crf import DenseCRF
from atrous.data import build_dataset
from atrous.data.viridis import apply_colormap
from atrous.metrics import CalibrationBins

NAMES = ["background", "circle", "rectangle", "triangle"]
SHAPES = ["--dataset", "shapes", "--split", "val", "--max-images", "3", "--workers", "0", "--no-progress"]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    yield from single_thread()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(small_model(num_classes=4), tmp_path_factory.mktemp("ckpt") / "model.pt", NAMES)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shapes_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def labels_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ONNX model exported with its argmax inside: it outputs labels, not probabilities."""
    from atrous.exporters import export_onnx

    net = tiny_net(4)
    net.class_names = NAMES
    return export_onnx(net, tmp_path_factory.mktemp("labels") / "labels.onnx", input_size=(72, 96), argmax=True).path


def read16(path: Path) -> tuple[np.ndarray, dict[str, str]]:
    """A ``_confidence16.png`` as its values, by the scale its text chunk states."""
    with Image.open(path) as image:
        assert image.mode.startswith("I;16")
        text = dict(image.text)
        pixels = np.asarray(image, dtype=np.float64)
    return pixels / 65535 * float(text["scale"]), text


def predict(checkpoint: Path, image: Path, out: Path, *options: str) -> int:
    argv = ["predict", "--checkpoint", str(checkpoint), str(image), "--out", str(out), "--workers", "0"]
    return main([*argv, "--no-progress", *options])


def test_predict_confidence_writes_the_max_probability_picture_and_16_bit_values(
    checkpoint: Path, images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pred"
    assert predict(checkpoint, images / "img0.png", out, "--confidence") == 0  # bare: max probability
    image = np.asarray(Image.open(images / "img0.png").convert("RGB"))
    expected = atrous.confidence(Predictor(load_model(checkpoint)).predict_proba(image))
    assert expected.shape == image.shape[:2] and float(expected.min()) >= 0.25  # 1/K at least
    values, text = read16(out / "img0_confidence16.png")
    assert text["confidence"] == "max" and float(text["scale"]) == 1.0 and "65535" in text["Description"]
    assert values.shape == expected.shape
    assert np.abs(values - expected).max() <= 0.5 / 65535 + 1e-7  # the stated scale, to the step
    picture = np.asarray(Image.open(out / "img0_confidence.png").convert("RGB"))
    assert picture.shape[0] > image.shape[0] and picture.shape[1] >= image.shape[1]  # + the colour bar
    coloured = picture[: image.shape[0], : image.shape[1]]
    assert (coloured == apply_colormap(expected, 0.0, 1.0)).all(-1).mean() > 0.999
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["img0.png", "img0_color.png", "img0_overlay.png", "img0_confidence.png", "img0_confidence16.png"]
    )


def test_predict_confidence_entropy_is_of_the_crf_marginals_with_crf(
    checkpoint: Path, images: Path, tmp_path: Path
) -> None:
    plain, refined = tmp_path / "plain", tmp_path / "crf"
    assert predict(checkpoint, images / "img1.png", plain, "--confidence=entropy") == 0
    crf = ["--crf-params", "iterations=2", "--confidence", "entropy"]
    assert predict(checkpoint, images / "img1.png", refined, *crf) == 0
    image = np.asarray(Image.open(images / "img1.png").convert("RGB"))
    model = load_model(checkpoint)
    network = atrous.confidence(Predictor(model).predict_proba(image), "entropy")
    marginals = atrous.confidence(Predictor(model, crf=DenseCRF(iterations=2)).predict_proba(image), "entropy")
    step = math.log(4) / 65535
    for folder, expected in ((plain, network), (refined, marginals)):
        values, text = read16(folder / "img1_confidence16.png")
        assert text["confidence"] == "entropy" and float(text["scale"]) == pytest.approx(math.log(4))
        assert np.abs(values - expected).max() <= step + 1e-5
    assert np.abs(network - marginals).max() > 10 * step  # the CRF changed them: the file follows the mask


def test_confidence_of_a_labels_only_model_is_refused(
    labels_only: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "pred"
    assert predict(labels_only, images, out, "--confidence") == 2
    err = capsys.readouterr().err
    assert "--confidence" in err and "outputs labels" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not list(out.iterdir())


def test_a_file_taken_for_the_confidence_kind_is_one_line(
    checkpoint: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["predict", "--checkpoint", str(checkpoint), "--confidence", str(images / "img0.png")]
    assert main([*argv, "--out", str(tmp_path / "pred")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--confidence=max" in err and "img0.png" in err and len(err.splitlines()) == 1


def test_eval_reports_the_ece_and_writes_the_reliability_diagram(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(checkpoint), *SHAPES, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ECE" in printed and "15 bins" in printed and "reliability.png" in printed
    dataset = build_dataset("shapes", None, "val")
    predictor = Predictor(load_model(checkpoint))
    bins = CalibrationBins(15, ignore_index=dataset.ignore_index)
    for index in range(3):
        image, mask = dataset[index]
        bins.update(torch.as_tensor(predictor.predict_proba(image)), mask)
    expected = bins.compute()
    result = json.loads((out / "eval.json").read_text())
    assert result["ece"] == pytest.approx(expected["ece"], abs=1e-9)
    assert [row["pixels"] for row in result["calibration"]["bins"]] == [row["pixels"] for row in expected["bins"]]
    assert f"{100 * expected['ece']:6.2f}" in printed
    with Image.open(out / "reliability.png") as picture:
        assert picture.format == "PNG" and picture.mode == "RGB" and picture.width > 300
    # the outputs are kept unless --force
    assert main(["eval", "--checkpoint", str(checkpoint), *SHAPES, "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    argv = ["eval", "--checkpoint", str(checkpoint), *SHAPES, "--out", str(out), "--force", "--json"]
    assert main([*argv, "--calibration-bins", "5"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed["calibration"]["bins"]) == 5 and printed == json.loads((out / "eval.json").read_text())


def test_eval_of_a_labels_only_model_has_no_calibration(
    labels_only: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "eval"
    argv = ["eval", "--checkpoint", str(labels_only), *SHAPES, "--input-size", "72", "96", "--out", str(out)]
    assert main(argv) == 0
    assert "n/a  (the model outputs labels" in capsys.readouterr().out
    assert json.loads((out / "eval.json").read_text())["ece"] is None
    assert not (out / "reliability.png").exists()


def test_confidence_on_a_video_is_refused_not_ignored(
    checkpoint: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("av")
    out = tmp_path / "pred"
    assert predict(checkpoint, images, out, "--as-video", "--confidence") == 2
    err = capsys.readouterr().err.strip()
    assert "--confidence is for still images" in err and len(err.splitlines()) == 1
    assert not out.exists()
