"""`atrous info FILE` on a shipped name, an exported .onnx and a .tflite graph; `atrous list
--weights`; `atrous list --configs` with whole descriptions."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _inference_models import IMAGENET_MEAN, IMAGENET_STD, single_thread, small_model, tiny_net, write_checkpoint

from atrous.cli import main
from atrous.cli.info import recipe_description
from atrous.recipes import find_recipe, recipe_names
from atrous.shipped import SHIPPED, shipped_model, shipped_names

OFFICIAL_TFLITE = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "deeplab-tflite" / "deeplabv3_mnv2_pascal_quant.tflite"
)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    yield from single_thread()


def info_json(target: str, capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert main(["info", target, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_list_weights_prints_one_row_per_shipped_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--weights"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "model", "classes", "trained", "on", "measured", "size"]
    for record, line in zip(SHIPPED, lines[2:]):
        assert line.startswith(record.name + " ")
        for text in (
            record.model,
            record.classes,
            record.training_data,
            record.score_text(),
            f"{record.size / 1e6:.1f} MB",
        ):
            assert text in line


def test_info_on_a_shipped_name(capsys: pytest.CaptureFixture[str]) -> None:
    record = shipped_model("camvid")
    assert main(["info", "camvid"]) == 0
    text = capsys.readouterr().out
    assert f"SHA-256         {hashlib.sha256(record.path.read_bytes()).hexdigest()}" in text
    assert "deeplabv3plus_mobilenet_edgetpu" in text and "74.86 % mIoU, CamVid val" in text
    assert "0  Sky         #808080 (128, 128, 128)" in text and "(p − 127.5) / 127.5" in text
    assert "camvid_deeplabv3plus_mobilenet_edgetpu_cityscapes_phase3" in text  # the recipe it was trained with
    facts = info_json("camvid", capsys)
    assert facts["sha256"] == record.sha256 and facts["shipped"]["sha256_matches_record"]
    assert facts["num_classes"] == 11 and facts["output"]["kind"] == "logits"
    assert facts["input"]["mean"] == [0.5] * 3 and facts["metrics"]["val_miou"] == pytest.approx(0.7486, abs=1e-4)


def test_info_on_a_converted_checkpoint_names_its_graph(capsys: pytest.CaptureFixture[str]) -> None:
    facts = info_json("cityscapes", capsys)
    assert facts["classes"][0] == {"index": 0, "name": "road", "colour": [128, 64, 128]}
    assert facts["input"]["size"] == [513, 513] and facts["input"]["normalisation"] == "(p − 128) / 128 on 0–255 pixels"
    assert "deeplab_mobilenet_edgetpu_slim_cityscapes_quant.tflite" in facts["provenance"][0]
    assert "activation" in facts["precision"]


def test_info_on_an_exported_onnx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from atrous.exporters import export_onnx

    model = tiny_net(num_classes=3)  # exports in a second; what info reads is the metadata atrous stores
    model.config = {"name": "tiny_net", "num_classes": 3}
    model.class_names, model.palette = ["sky", "road", "car"], [(1, 2, 3), (4, 5, 6), (7, 8, 9)]
    model.mean, model.std = IMAGENET_MEAN, IMAGENET_STD
    path = export_onnx(model, tmp_path / "tiny.onnx", input_size=(64, 64), argmax=True).path
    facts = info_json(str(path), capsys)
    assert facts["format"].startswith("ONNX (opset") and facts["model"] == "tiny_net"
    assert [c["name"] for c in facts["classes"]] == ["sky", "road", "car"] and facts["classes"][2]["colour"] == [
        7,
        8,
        9,
    ]
    assert facts["input"]["size"] == [64, 64] and facts["input"]["mean"] == pytest.approx(list(IMAGENET_MEAN))
    assert facts["output"]["kind"] == "labels" and facts["output"]["dtype"] == "int64"
    assert facts["precision"] == "float32" and facts["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert main(["info", str(path)]) == 0
    assert "exported by `atrous export`" in capsys.readouterr().out


def test_info_on_a_checkpoint_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_checkpoint(
        small_model("lraspp_mobilenet_v3_small", num_classes=3), tmp_path / "run.pt", ["a", "b", "c"]
    )
    facts = info_json(str(path), capsys)
    assert facts["format"].startswith("atrous checkpoint") and facts["shipped"] is None
    assert facts["model"] == "lraspp_mobilenet_v3_small" and [c["name"] for c in facts["classes"]] == ["a", "b", "c"]
    assert facts["input"]["mean"] == pytest.approx(list(IMAGENET_MEAN)) and facts["output"]["shape"] == "(N, 3, H, W)"
    assert facts["parameters"] > 0 and facts["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


# Exported in a child process: litert-torch starts JAX's threads, which a forking pytest must not inherit.
TFLITE_EXPORT = """
import sys
sys.path.insert(0, sys.argv[2])
from _inference_models import tiny_net
from atrous.exporters import export_tflite
model = tiny_net(num_classes=3)
model.config = {"name": "tiny_net", "num_classes": 3}
model.class_names, model.palette = ["a", "b", "c"], [(1, 2, 3), (4, 5, 6), (7, 8, 9)]
model.mean, model.std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
export_tflite(model, sys.argv[1], input_size=(32, 32), argmax=True)
"""


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("litert_torch") is None or importlib.util.find_spec("ai_edge_litert") is None,
    reason="TFLite export needs the tflite extra",
)
def test_info_on_an_exported_tflite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tiny.tflite"
    subprocess.run(
        [sys.executable, "-c", TFLITE_EXPORT, str(path), str(Path(__file__).parent)],
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        timeout=300,
    )
    facts = info_json(str(path), capsys)
    assert facts["format"] == "TFLite" and facts["model"] == "tiny_net" and facts["input"]["layout"] == "NHWC"
    assert [c["colour"] for c in facts["classes"]] == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert (
        facts["input"]["size"] == [32, 32] and facts["input"]["normalisation"] == "(p − 127.5) / 63.75 on 0–255 pixels"
    )
    assert facts["output"]["kind"] == "labels" and facts["precision"].startswith("float32")
    assert facts["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.skipif(
    not OFFICIAL_TFLITE.is_file(), reason="the official TF DeepLab graphs (../shared/data) are not present"
)
def test_info_on_an_official_tflite_graph(capsys: pytest.CaptureFixture[str]) -> None:
    facts = info_json(str(OFFICIAL_TFLITE), capsys)
    assert (
        facts["input"]["size"] == [513, 513]
        and facts["input"]["dtype"] == "uint8"
        and facts["input"]["layout"] == "NHWC"
    )
    assert facts["input"]["normalisation"] == "(p − 128) / 128 on 0–255 pixels"
    assert facts["output"] == {"kind": "labels", "shape": "(1, 513, 513)", "dtype": "int64"}
    assert facts["num_classes"] == 21 and facts["sha256"] == hashlib.sha256(OFFICIAL_TFLITE.read_bytes()).hexdigest()


def test_info_on_an_unknown_name_lists_the_shipped_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "camvd"]) == 2
    error = capsys.readouterr().err
    assert "did you mean 'camvid'" in error and all(name in error for name in shipped_names())
    assert main(["info", "missing/model.pt"]) == 2
    assert "missing/model.pt does not exist" in capsys.readouterr().err


def test_list_configs_prints_whole_first_sentences(capsys: pytest.CaptureFixture[str]) -> None:
    assert recipe_description(find_recipe("shapes_deeplabv3plus_mobilenet_v2")) == (
        "Demo recipe: DeepLab v3+ with a MobileNet v2 backbone, trained from scratch on the "
        "synthetic shapes dataset (generated on the fly, nothing to download)."
    )
    assert main(["list", "--configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in recipe_names():
        (line,) = [line for line in lines if line.startswith(name + " ")]
        description = line[len(name) :].strip()
        assert description and description.split()[-1] not in ("the", "a", "and", "of", "on", "with", "from"), line
