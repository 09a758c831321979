"""``atrous.open`` (checkpoint, shipped name, .onnx, a ``*.crf.json`` beside it) and
``atrous.export`` behind the format registry, with real files and ONNX Runtime sessions."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from _inference_models import single_thread, small_model, tiny_net, write_checkpoint

import atrous
from atrous.crf import DenseCRF
from atrous.errors import AtrousError, CheckpointError, ConfigError
from atrous.exporters import OnnxModel, formats
from atrous.exporters.formats import ExportFormat, export_formats, format_for_path, get_format, register_format
from atrous.inference import Predictor
from atrous.opening import OpenedModel

SIZE = (64, 64)
TUNED = {"iterations": 3, "bilateral_compat": 4.0, "bilateral_sxy": 50.0, "bilateral_srgb": 5.0}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    yield from single_thread()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A checkpoint with its tuned CRF beside it; a small net's ONNX export (logits) and an argmax one (labels)."""
    folder = tmp_path_factory.mktemp("opening")
    model = small_model("lraspp_mobilenet_v3_small", num_classes=4)
    checkpoint = write_checkpoint(model, folder / "model.pt")
    (folder / "model.crf.json").write_text(json.dumps({"params": TUNED, "miou": 0.5}))
    logits = atrous.export(NET, folder / "logits.onnx", input_size=SIZE).path
    labels = atrous.export(NET, folder / "labels.onnx", input_size=SIZE, argmax=True).path
    return {"checkpoint": checkpoint, "logits": logits, "labels": labels}


NET = tiny_net(3)


def test_a_checkpoint_opens_with_its_config_and_tuned_crf(files: dict[str, Path]) -> None:
    opened = atrous.open(files["checkpoint"])
    assert isinstance(opened, OpenedModel) and opened.format == "checkpoint"
    assert isinstance(opened.model, torch.nn.Module) and not opened.model.training
    assert opened.model.config["name"] == "lraspp_mobilenet_v3_small" and opened.model.num_classes == 4
    assert opened.outputs == "logits" and opened.device == torch.device("cpu")
    assert opened.crf_file == files["checkpoint"].with_name("model.crf.json")
    assert opened.crf_params == TUNED and isinstance(opened.crf_params["iterations"], int)
    crf = opened.predictor(crf=True).crf
    assert isinstance(crf, DenseCRF) and crf.iterations == 3 and crf.bilateral_sxy == (50.0, 50.0)
    assert float(crf.bilateral_compat) == 4.0
    assert opened.predictor().crf is None
    assert opened.predictor(crf={"iterations": 1}).crf.iterations == 1
    image = np.random.default_rng(0).integers(0, 256, (SIZE[0], SIZE[1], 3), dtype=np.uint8)
    direct = Predictor(atrous.load_model(files["checkpoint"])).predict_proba(image)
    assert np.allclose(opened.predictor().predict_proba(image), direct)


def test_an_onnx_file_opens_in_onnx_runtime_and_records_the_export_transforms(files: dict[str, Path]) -> None:
    opened = atrous.open(files["logits"])
    assert opened.format == "onnx" and isinstance(opened.model, OnnxModel)
    assert opened.outputs == "logits" and opened.crf_params is None  # no logits.crf.json beside it
    assert opened.transforms == ("fold_bn",) and opened.suggested_size() == SIZE
    meta = {p.key: p.value for p in onnx.load(str(files["logits"])).metadata_props}
    assert json.loads(meta["atrous.transforms"]) == ["fold_bn"]
    image = np.random.default_rng(1).integers(0, 256, (SIZE[0], SIZE[1], 3), dtype=np.uint8)
    reference = Predictor(NET).predict(image)
    assert (opened.predictor().predict(image) == reference).mean() >= 0.999
    assert atrous.open(files["labels"]).outputs == "labels"


def test_a_crf_on_a_labels_only_model_is_refused_in_one_line(files: dict[str, Path]) -> None:
    opened = atrous.open(files["labels"])
    for attempt in (
        lambda: opened.predictor(crf=True),
        lambda: opened.crf(),
        lambda: Predictor(opened.model, crf=DenseCRF()),
    ):
        with pytest.raises(ConfigError, match="outputs labels") as error:
            attempt()
        assert "\n" not in str(error.value)


def test_an_exported_graph_has_no_other_output_stride(files: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="--output-stride needs a checkpoint"):
        atrous.open(files["logits"], output_stride=8)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"params": {"bilateral_sxy": "50"}}, "bilateral_sxy must be a number"),
        ({"params": {"bilateral_sxy": None}}, "bilateral_sxy must be a number"),
        ({"params": {"iterations": [5]}}, "iterations must be a number"),
        ({"params": {"iterations": True}}, "iterations must be a number"),
        ({"params": {"iterations": 2.5}}, "whole number"),
        ({"params": {"sigma": 3}}, "unknown CRF parameter"),
        ({"params": ["bilateral_sxy", 3]}, "must hold an object"),
        ('{"params": {"iterations": NaN}}', "must be finite"),
        ({"params": {"gaussian_compat": 1e38}}, "gaussian_compat must be ≤"),
        ({"params": {"bilateral_srgb": 1e-30}}, "bilateral_srgb must be ≥"),
        (b"\xff\xfe\x00 not text", "not a UTF-8 text file"),
        ("{", "not valid JSON"),
    ],
)
def test_a_bad_crf_file_beside_a_model_is_one_clear_error_when_its_crf_is_asked_for(
    files: dict[str, Path], tmp_path: Path, content: object, message: str
) -> None:
    model = tmp_path / "m.pt"
    model.write_bytes(files["checkpoint"].read_bytes())
    beside = tmp_path / "m.crf.json"
    if isinstance(content, bytes):
        beside.write_bytes(content)
    else:
        beside.write_text(content if isinstance(content, str) else json.dumps(content))
    opened = atrous.open(model)  # the model itself runs: only a CRF with the file's parameters is refused
    assert opened.crf_params is None and opened.crf_file == beside and re.search(message, opened.crf_problem or "")
    for attempt in (opened.crf, lambda: opened.predictor(crf=True)):
        with pytest.raises(ConfigError, match=message) as error:
            attempt()
        assert str(beside) in str(error.value) and "\n" not in str(error.value) and "--crf-params" in str(error.value)
    opened.predictor(crf={"iterations": 1})  # parameters given instead
    assert opened.predictor().predict(np.zeros((40, 40, 3), np.uint8)).shape == (40, 40)


def test_a_shipped_name_opens_its_packaged_file() -> None:
    from atrous.shipped import resolve_checkpoint, shipped_names

    if "voc-small" not in shipped_names() or not resolve_checkpoint("voc-small").is_file():
        pytest.skip("the shipped weights are not in this checkout")
    opened = atrous.open("voc-small")
    assert opened.path == resolve_checkpoint("voc-small") and opened.format == "checkpoint"
    assert opened.model.num_classes == 21 and opened.model.class_names[0] == "background"
    with pytest.raises(CheckpointError):
        atrous.open("no-such-model-name")


def test_the_registry_lists_every_format_with_its_suffix_and_options() -> None:
    assert list(export_formats()) == ["onnx", "tflite", "pt2", "torchscript"]
    assert format_for_path("x/Model.ONNX").name == "onnx" and format_for_path("m.pt").name == "torchscript"
    assert {"dynamic", "opset", "int8", "calibration"} <= set(get_format("onnx").options())
    assert "dynamic" not in get_format("tflite").options() and get_format("pt2").options() == ["dynamic"]
    with pytest.raises(ConfigError, match="unknown export format 'caffe'; valid: onnx"):
        get_format("caffe")
    with pytest.raises(ConfigError, match="from its suffix"):
        format_for_path("model.caffemodel")


def test_export_refuses_what_its_format_cannot_do_before_any_work(tmp_path: Path) -> None:
    net = small_model("lraspp_mobilenet_v3_small", num_classes=3)
    with pytest.raises(ConfigError, match="takes no option dynamic; valid: int8"):
        atrous.export(net, tmp_path / "m.tflite", dynamic=True)
    with pytest.raises(ConfigError, match="onnx exports end in .onnx"):
        atrous.export(net, tmp_path / "m.tflite", format="onnx")
    with pytest.raises(ConfigError, match="int8 needs calibration images"):
        atrous.export(net, tmp_path / "m.onnx", int8=True)
    with pytest.raises(ConfigError, match="export takes an nn.Module"):
        atrous.export(lambda x: x, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_of_an_exported_graph_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="already an exported onnx graph"):
        atrous.export(files["logits"], tmp_path / "again.onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_makes_the_folder_and_takes_a_registered_format(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def write_weights(model: torch.nn.Module, path: Path, *, input_size: tuple[int, int], argmax: bool) -> object:
        """A format of one's own: the state dict, checked by loading it back."""
        from atrous.exporters._common import ExportReport

        torch.save(model.state_dict(), path)
        loaded = torch.load(path, weights_only=True)
        same = all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
        return ExportReport(
            path, 0.0 if same else float("inf"), 1.0, 1.0 if same else 0.0, [input_size], kind="weights"
        )

    monkeypatch.setattr(formats, "_FORMATS", dict(formats._FORMATS))
    added = register_format("weights", suffix=".weights", summary="the bare state dict", writer=write_weights)
    assert isinstance(added, ExportFormat) and added.options() == []
    out = tmp_path / "new" / "folder" / "model.weights"
    report = atrous.export(files["checkpoint"], out)
    assert report.path == out and out.is_file() and report.argmax_agreement == 1.0
    assert report.checked_sizes == [formats.DEFAULT_INPUT_SIZE]  # the checkpoint records no training crop
    from atrous.cli import build_parser  # the command line offers the new format

    args = build_parser(["export"]).parse_args(
        ["export", "--format", "weights", "--checkpoint", "x.pt", "--out", "y.weights"]
    )
    assert args.format == "weights"
    with pytest.raises(ValueError, match="registered twice"):
        register_format("weights", suffix=".w2", summary="", writer=write_weights)


def test_export_never_replaces_its_source_and_an_existing_file_only_when_told(
    files: dict[str, Path], tmp_path: Path
) -> None:
    source = tmp_path / "model.pt"
    source.write_bytes(files["checkpoint"].read_bytes())
    with pytest.raises(AtrousError, match="is also an input"):
        atrous.export(source, source, format="torchscript", input_size=SIZE, overwrite=True)
    assert source.read_bytes() == files["checkpoint"].read_bytes()
    notes = tmp_path / "notes.onnx"
    notes.write_text("my notes")
    with pytest.raises(AtrousError, match="overwrite=True"):
        atrous.export(NET, notes, input_size=SIZE)
    assert notes.read_text() == "my notes"
    assert atrous.export(NET, notes, input_size=SIZE, overwrite=True).path == notes
    assert notes.read_bytes() != b"my notes"
