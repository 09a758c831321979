"""Export: ONNX Runtime parity (every model, slow), dynamic shapes, argmax in the graph,
int8, torch.export / jit.trace, and that a failed export leaves no file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from _inference_models import IMAGENET_MEAN, IMAGENET_STD, single_thread, small_model, tiny_net
from torch import nn

from atrous import list_models
from atrous.errors import ConfigError, DataError
from atrous.exporters import (
    ExportError,
    ExportReport,
    OnnxModel,
    calibration_batches,
    export_onnx,
    export_program,
    export_torchscript,
    prepare_for_export,
    trace_program,
)
from atrous.exporters.quantize import quantize_int8
from atrous.labels import class_labels

SIZE = (64, 64)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    yield from single_thread()


def graph_ops(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def check_onnx_report(report: ExportReport, name: str) -> None:
    print(
        f"{name}: ONNX Runtime − PyTorch max |logit diff| {report.max_abs_diff:.2e} (|logits| ≤ {report.max_abs_logit:.2f})"
    )
    assert report.max_abs_diff <= 1e-4 * max(1.0, report.max_abs_logit / 10)
    assert report.argmax_agreement >= 0.9999
    ops = graph_ops(report.path)
    assert "BatchNormalization" not in ops  # folded into the convolutions
    assert not ops & {"GlobalAveragePool", "AveragePool"}  # image pooling is a ReduceMean


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_onnx_matches_pytorch_every_model(name: str, tmp_path: Path) -> None:
    report = export_onnx(small_model(name, num_classes=5), tmp_path / f"{name}.onnx", input_size=SIZE)
    check_onnx_report(report, name)


@pytest.fixture(scope="module")
def dynamic_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, ExportReport]:
    """v3+ (ASPP with image pooling, decoder, separable convs) exported with dynamic H, W."""
    model = small_model("deeplabv3plus_mobilenet_v3_small", num_classes=4)
    model.class_names, model.palette = ["a", "b", "c", "d"], [(1, 2, 3)] * 4
    model.mean, model.std = IMAGENET_MEAN, IMAGENET_STD
    report = export_onnx(model, tmp_path_factory.mktemp("onnx") / "dynamic.onnx", input_size=SIZE, dynamic=True)
    return model, report


def test_onnx_matches_pytorch(dynamic_export: tuple[nn.Module, ExportReport]) -> None:
    report = dynamic_export[1]
    assert report.checked_sizes == [SIZE, (77, 71)]
    check_onnx_report(report, "deeplabv3plus_mobilenet_v3_small")


def test_dynamic_export_runs_any_size_and_batch(dynamic_export: tuple[nn.Module, ExportReport]) -> None:
    model, report = dynamic_export
    runtime = OnnxModel(report.path)
    assert runtime.input_size is None and not runtime.outputs_labels
    for shape in [(1, 3, 97, 50), (3, 3, 40, 129)]:
        image = torch.randn(*shape)
        with torch.no_grad():
            expected = model(image)
        got = runtime(image)
        assert got.shape == expected.shape
        assert (got - expected).abs().max() <= 1e-4


def test_metadata_travels_with_the_file(dynamic_export: tuple[nn.Module, ExportReport]) -> None:
    runtime = OnnxModel(dynamic_export[1].path)
    assert runtime.class_names == ["a", "b", "c", "d"] and runtime.num_classes == 4
    assert runtime.palette == [(1, 2, 3)] * 4
    assert runtime.mean == pytest.approx(IMAGENET_MEAN) and runtime.std == pytest.approx(IMAGENET_STD)
    assert runtime.config["name"] == "deeplabv3plus_mobilenet_v3_small"


def test_static_export_refuses_other_sizes(tmp_path: Path) -> None:
    path = tmp_path / "static.onnx"
    export_onnx(nn.Conv2d(3, 2, 1), path, input_size=(40, 48))
    runtime = OnnxModel(path)
    assert runtime.input_size == (40, 48)
    assert runtime(torch.randn(2, 3, 40, 48)).shape == (2, 2, 40, 48)  # batch stays dynamic
    with pytest.raises(Exception, match=r"exported for 40×48 inputs but got 41×48.*--dynamic"):
        runtime(torch.randn(1, 3, 41, 48))


def test_argmax_inside_the_graph(tmp_path: Path) -> None:
    model = tiny_net(num_classes=3)
    report = export_onnx(model, tmp_path / "labels.onnx", input_size=SIZE, argmax=True)
    assert report.max_abs_diff is None and report.argmax_agreement >= 0.9999
    runtime = OnnxModel(report.path)
    assert runtime.outputs_labels and "ArgMax" in graph_ops(report.path)
    image = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        expected = model(image).argmax(1)
    labels = runtime(image)
    assert labels.dtype == torch.int64 and labels.shape == (2, *SIZE)
    assert (labels == expected).float().mean() >= 0.9999


def test_int8_mostly_agrees_with_float(tmp_path: Path) -> None:
    from PIL import Image

    from atrous.data import build_dataset

    images = tmp_path / "calibration"
    images.mkdir()
    shapes = build_dataset("shapes", None, "val", size=SIZE[0], num_images=6)
    for index in range(len(shapes)):
        Image.fromarray(shapes[index][0].permute(1, 2, 0).numpy()).save(images / f"{index}.png")
    float_path = export_onnx(tiny_net(num_classes=4), tmp_path / "float.onnx", input_size=SIZE).path
    batches = calibration_batches(images, SIZE, IMAGENET_MEAN, IMAGENET_STD)
    assert len(batches) == 6 and batches[0].shape == (1, 3, *SIZE) and batches[0].dtype == np.float32
    report = quantize_int8(float_path, tmp_path / "int8.onnx", batches)
    assert report.argmax_agreement >= 0.95
    assert {"QuantizeLinear", "DequantizeLinear"} <= graph_ops(report.path)
    int8 = OnnxModel(report.path)
    assert int8.class_names == OnnxModel(float_path).class_names and int8.input_size == SIZE
    percentile = quantize_int8(float_path, tmp_path / "int8p.onnx", batches, method="percentile")
    assert percentile.argmax_agreement >= 0.95 and {"QuantizeLinear"} <= graph_ops(percentile.path)
    with pytest.raises(ConfigError, match="calibration method"):
        quantize_int8(float_path, tmp_path / "int8x.onnx", batches, method="kl")
    assert not (tmp_path / "int8x.onnx").exists()
    # The same int8 graph ending in ArgMax outputs the labels of the logits one.
    labelled = quantize_int8(float_path, tmp_path / "int8a.onnx", batches, method="percentile", argmax=True)
    labels_model = OnnxModel(labelled.path)
    assert labels_model.outputs_labels and "ArgMax" in graph_ops(labelled.path)
    image = torch.from_numpy(batches[0])
    labels = labels_model(image)
    assert labels.shape == (1, *SIZE) and labels.dtype == torch.int64
    assert torch.equal(labels, class_labels(OnnxModel(percentile.path)(image)))
    assert labelled.argmax_agreement == percentile.argmax_agreement


def test_failed_verification_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match="was not written"):
        export_onnx(nn.Conv2d(3, 2, 1), path, input_size=(32, 32), min_agreement=1.5)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("target", "error"),
    [("missing/model.onnx", DataError), (".", DataError), ("model.txt", ConfigError)],
)
def test_bad_output_paths(target: str, error: type, tmp_path: Path) -> None:
    with pytest.raises(error):
        export_onnx(nn.Conv2d(3, 2, 1), tmp_path / target, input_size=(32, 32))
    assert not (tmp_path / "missing").exists() and not (tmp_path / "model.txt").exists()


def check_torch_formats(name: str) -> None:
    """torch.export with dynamic H, W and jit.trace both reproduce the eager model."""
    model = small_model(name, num_classes=3)
    module = prepare_for_export(model, SIZE)
    program = trace_program(module, torch.zeros(2, 3, *SIZE), dynamic=True).module()
    traced = torch.jit.trace(module, torch.zeros(1, 3, *SIZE), check_trace=False)
    image = torch.randn(1, 3, 49, 70)
    with torch.no_grad():
        expected = model(image)
        for runner in (program, traced):
            assert (runner(image) - expected).abs().max() <= 1e-4


def test_torch_export_and_jit_trace() -> None:
    check_torch_formats("lraspp_mobilenet_v3_small")


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_torch_export_and_jit_trace_every_model(name: str) -> None:
    check_torch_formats(name)


def test_saved_program_and_torchscript_round_trip(tmp_path: Path) -> None:
    model = tiny_net()
    program = export_program(model, tmp_path / "model.pt2", input_size=SIZE, dynamic=True)
    script = export_torchscript(model, tmp_path / "model.pt", input_size=SIZE)
    assert program.max_abs_diff <= 1e-4 and script.max_abs_diff <= 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "model.pt2"]


def test_atrous_export_int8_from_a_folder_of_any_image_format(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    import json

    from PIL import Image

    import atrous
    from atrous.data import build_dataset

    images = tmp_path / "calibration"
    images.mkdir()
    shapes = build_dataset("shapes", None, "val", size=SIZE[0], num_images=4)
    for index, suffix in enumerate((".bmp", ".webp", ".tif", ".png")):
        Image.fromarray(shapes[index][0].permute(1, 2, 0).numpy()).save(images / f"{index}{suffix}")
    model = tiny_net(num_classes=4)
    out = tmp_path / "deploy" / "int8.onnx"
    report = atrous.export(model, out, input_size=SIZE, int8=True, calibration=images, calibration_method="percentile")
    assert report.path == out and report.argmax_agreement >= 0.95
    assert "calibrated (percentile) on 4 images" in report.describe()  # every format, not only PNG/JPEG
    assert report.float_report is not None and report.float_report.max_abs_diff <= 1e-4
    meta = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props if p.key.startswith("atrous.")}
    assert meta["atrous.int8"] is True and meta["atrous.transforms"] == ["fold_bn"]
    assert {"QuantizeLinear", "DequantizeLinear"} <= graph_ops(out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["int8.onnx"]  # the float intermediate is gone
    assert capfd.readouterr().out == ""  # ONNX Runtime's histogram calibrators print their progress


def test_atrous_export_dispatches_by_suffix_to_torch_formats(tmp_path: Path) -> None:
    import atrous

    model = tiny_net(num_classes=3)
    program = atrous.export(model, tmp_path / "m.pt2", input_size=(32, 32), dynamic=True)
    assert program.checked_sizes == [(32, 32), (45, 39)] and program.max_abs_diff <= 1e-4
    script = atrous.export(model, tmp_path / "m.pt", input_size=(32, 32), argmax=True)
    assert script.max_abs_diff is None and script.argmax_agreement >= 0.9999
    assert "TorchScript" in script.describe()
