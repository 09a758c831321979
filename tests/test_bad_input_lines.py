"""Bad command-line input gets one clear line naming the flag and the fix (exit 2), no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from atrous.cli import main


def error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


def test_a_picture_as_config_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    picture = tmp_path / "some.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(picture)
    assert main(["train", "--config", str(picture)]) == 2
    assert "is not a text (YAML) file" in error_line(capsys)


def test_info_size_must_be_positive(capsys: pytest.CaptureFixture) -> None:
    assert main(["info", "deeplabv3_mobilenet_v2", "--size", "-5"]) == 2
    assert "argument --size: must be ≥ 1; got -5" in error_line(capsys)


def test_info_option_errors_name_option(capsys: pytest.CaptureFixture) -> None:
    assert main(["info", "deeplabv3_mobilenet_v2", "--option", "noequals"]) == 2
    assert "--option expects key=value" in error_line(capsys)


@pytest.mark.parametrize("flag, value, message", [("--bilateral-compat", "inf", "must be finite"),
                                                   ("--gaussian-compat", "-1", "must be ≥ 0")])  # fmt: skip
def test_crf_compatibilities_are_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture, flag: str, value: str, message: str
) -> None:
    import numpy as np

    image = tmp_path / "im.png"
    Image.new("RGB", (16, 12), (10, 200, 10)).save(image)
    probs = tmp_path / "p.npy"
    np.save(probs, np.full((3, 12, 16), 1 / 3, dtype=np.float32))
    assert (
        main(["crf", "--image", str(image), "--probs", str(probs), "--out", str(tmp_path / "o.png"), f"{flag}={value}"])
        == 2
    )
    assert message in error_line(capsys)


def test_sliding_windows_below_the_model_minimum_are_refused() -> None:
    from _inference_models import small_model

    from atrous import Predictor
    from atrous.errors import ConfigError

    model = small_model()
    with pytest.raises(ConfigError, match="smaller than the 32×32 input"):
        Predictor(model, crop_size=1)


def test_the_crf_refuses_a_model_that_outputs_labels(tmp_path: Path) -> None:
    from _inference_models import small_model

    from atrous import Predictor
    from atrous.crf import DenseCRF
    from atrous.errors import ConfigError
    from atrous.exporters import OnnxModel, export_onnx

    export_onnx(small_model(), tmp_path / "labels.onnx", input_size=(64, 64), argmax=True)
    with pytest.raises(ConfigError, match="outputs labels"):
        Predictor(OnnxModel(tmp_path / "labels.onnx"), crf=DenseCRF())


def test_eval_with_no_labelled_pixel_fails(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import numpy as np
    from _inference_models import small_model, write_checkpoint

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for index in range(2):
        Image.new("RGB", (40, 40), (index * 90, 40, 40)).save(root / "images" / f"im{index}.png")
        Image.fromarray(np.full((40, 40), 255, dtype=np.uint8)).save(root / "masks" / f"im{index}.png")
    (root / "classes.txt").write_text("a\nb\nc\nd\n")
    checkpoint = write_checkpoint(small_model(), tmp_path / "m.pt", class_names=["a", "b", "c", "d"])
    argv = [
        "eval",
        "--checkpoint",
        str(checkpoint),
        "--data",
        str(root),
        "--split",
        "all",
        "--workers",
        "0",
        "--no-progress",
    ]
    assert main(argv) == 2
    assert "no labelled pixel" in error_line(capsys)


@pytest.mark.parametrize("kind", ["npz", "empty", "png"])
def test_crf_probs_that_are_not_npy_are_named(tmp_path: Path, capsys: pytest.CaptureFixture, kind: str) -> None:
    import numpy as np

    image = tmp_path / "im.png"
    Image.new("RGB", (16, 12), (10, 200, 10)).save(image)
    probs = tmp_path / f"p.{kind}"
    if kind == "npz":
        np.savez(probs, p=np.zeros((3, 12, 16)))
    elif kind == "empty":
        probs.write_bytes(b"")
    else:
        Image.new("RGB", (16, 12)).save(probs, format="PNG")
    assert main(["crf", "--image", str(image), "--probs", str(probs), "--out", str(tmp_path / "o.png")]) == 2
    line = error_line(capsys)
    assert "is not a .npy array" in line and "allow_pickle" not in line
    expected = {"npz": "a NumPy .npz archive", "empty": "an empty file", "png": "a PNG image"}[kind]
    assert expected in line


def test_crf_unknown_device_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image = tmp_path / "im.png"
    Image.new("RGB", (16, 12)).save(image)
    assert (
        main(["crf", "--image", str(image), "--probs", str(image), "--out", str(tmp_path / "o.png"), "--device", "foo"])
        == 2
    )
    assert "unknown device 'foo'" in error_line(capsys)


@pytest.mark.parametrize("kind", ["png", "onnx", "random", "truncated"])
def test_a_checkpoint_option_given_another_file_says_what_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture, kind: str
) -> None:
    from _inference_models import small_model, write_checkpoint

    path = tmp_path / f"model.{'onnx' if kind == 'onnx' else 'pt'}"
    if kind == "png":
        Image.new("RGB", (8, 8)).save(path, format="PNG")
    elif kind == "onnx":
        path.write_bytes(b"\x08\x08\x12\x07pytorch" + bytes(range(64)))
    elif kind == "random":
        path.write_bytes(bytes((7 * i + 3) % 256 for i in range(256)))  # fixed "random" bytes, no known signature
    else:
        good = write_checkpoint(small_model(), tmp_path / "good.pt")
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    out = tmp_path / "pred"
    argv = ["predict", "--checkpoint", str(path), str(tmp_path / "none.png"), "--out", str(out), "--no-progress"]
    Image.new("RGB", (40, 40)).save(tmp_path / "none.png")
    assert main(argv) == 2
    line = error_line(capsys)
    assert "tampered" not in line and line.rstrip().endswith(("copy", ")", "use another copy"))
    expected = {"png": "not a PyTorch checkpoint file (it looks like a PNG image)", "onnx": "ONNX",
                "random": "not a PyTorch checkpoint file", "truncated": "truncated or damaged"}[kind]  # fmt: skip
    assert expected in line


def test_an_indexed_cpu_device_is_the_cpu(tmp_path: Path) -> None:
    from _inference_models import small_model, write_checkpoint

    checkpoint = write_checkpoint(small_model(), tmp_path / "m.pt")
    Image.new("RGB", (40, 40)).save(tmp_path / "im.png")
    argv = ["predict", "--checkpoint", str(checkpoint), str(tmp_path / "im.png"), "--out", str(tmp_path / "out"),
            "--device", "cpu:0", "--no-progress"]  # fmt: skip
    assert main(argv) == 0


def test_shipped_recipes_name_no_data_folder_and_ask_for_data(capsys: pytest.CaptureFixture) -> None:
    """A recipe must not point into this repository's data; without --data the run says so."""
    from atrous.recipes import RECIPES

    for recipe in RECIPES.glob("*.yaml"):
        assert "\ndata:" not in "\n" + recipe.read_text(), recipe.name
    assert main(["train", "--config", "camvid_deeplabv3plus_mobilenet_v2", "--out", "/nonexistent-run"]) == 2
    assert "pass --data DIR" in error_line(capsys)


def test_crf_probability_advice_names_the_cli_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import numpy as np

    image = tmp_path / "im.png"
    Image.new("RGB", (16, 12)).save(image)
    probs = tmp_path / "p.npy"
    np.save(probs, np.full((3, 12, 16), -2.0, dtype=np.float32))  # scores, not probabilities
    assert main(["crf", "--image", str(image), "--probs", str(probs), "--out", str(tmp_path / "o.png")]) == 2
    line = error_line(capsys)
    assert "pass --logits" in line and "from_logits" not in line


def test_predict_refuses_inputs_whose_outputs_clash(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from _inference_models import small_model, write_checkpoint

    checkpoint = write_checkpoint(small_model(), tmp_path / "m.pt")
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (40, 40), (200, 0, 0)).save(images / "x.png")
    Image.new("RGB", (40, 40), (0, 200, 0)).save(images / "x_color.png")
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(checkpoint), str(images), "--out", str(out), "--no-progress"]) == 2
    assert "would both write" in error_line(capsys)
    assert not out.exists() or not any(out.iterdir())
