"""`atrous convert`: the TF DeepLab authors' TFLite models, checked against LiteRT running them.

The reference runs the uint8 graph with the LiteRT interpreter (``ai-edge-litert``, a
test-only dependency like pydensecrf2); atrous runs the converted float model. Labels
must agree on ≥ 98.5 % of pixels on average and ≥ 97 % on every photo.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atrous import load_model
from atrous.cli import main
from atrous.convert import convert_tflite, read_tflite, tf_deeplab
from atrous.errors import CheckpointError, ModelFileError

ROOT = Path(__file__).resolve().parents[1]
TFLITE = ROOT.parent / "shared" / "data" / "deeplab-tflite"
GRAPHS = ("deeplabv3_mnv2_pascal_quant.tflite", "deeplabv3_mnv2_dm05_pascal_quant.tflite")
PHOTOS = ("bird.bmp", "dog.bmp")
needs_graphs = pytest.mark.skipif(not TFLITE.is_dir(), reason="../shared/data/deeplab-tflite is not present")


pytestmark = pytest.mark.usefixtures("two_threads")


def photo_513(name: str) -> np.ndarray:
    """A sample photo resized to the graphs' 513×513 input, uint8 (H, W, 3)."""
    return np.asarray(Image.open(TFLITE / name).convert("RGB").resize((513, 513), Image.BILINEAR))


def litert_labels(graph: str, image: np.ndarray) -> np.ndarray:
    interpreter_module = pytest.importorskip("ai_edge_litert.interpreter")
    interpreter = interpreter_module.Interpreter(model_path=str(TFLITE / graph), num_threads=2)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]


def atrous_labels(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    mean = torch.tensor(model.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.std).view(1, 3, 1, 1)
    x = (torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255 - mean) / std
    with torch.no_grad():
        return model(x).argmax(1)[0].numpy()


@needs_graphs
@pytest.mark.parametrize("graph", GRAPHS)
def test_converted_model_agrees_with_litert(graph: str, tmp_path: Path) -> None:
    out = tmp_path / "voc.pt"
    assert main(["convert", str(TFLITE / graph), "--out", str(out)]) == 0
    model = load_model(out)
    assert model.num_classes == 21 and model.class_names[12] == "dog" and model.palette[15] == (192, 128, 128)
    assert (
        model.mean == model.std == (128 / 255,) * 3 and model.output_stride == 16
    )  # the input quantisation (p − 128) / 128
    agreements = {}
    for photo in PHOTOS:
        image = photo_513(photo)
        agreements[photo] = float((atrous_labels(model, image) == litert_labels(graph, image)).mean())
    print(f"{graph}: label agreement with LiteRT " + ", ".join(f"{k} {100 * v:.2f} %" for k, v in agreements.items()))
    assert min(agreements.values()) >= 0.97
    assert np.mean(list(agreements.values())) >= 0.985


@needs_graphs
def test_graph_structure_is_read() -> None:
    graph = read_tflite(TFLITE / GRAPHS[0])
    ops = [op.op for op in graph.operators]
    assert ops.count("CONV_2D") == 38 and ops.count("DEPTHWISE_CONV_2D") == 17 and ops.count("ADD") == 10
    resizes = [op for op in graph.operators if op.op == "RESIZE_BILINEAR"]
    assert len(resizes) == 3 and all(op.options["align_corners"] for op in resizes)
    first = graph.tensors[graph.operators[0].inputs[1]]
    assert tf_deeplab.scope_of(first) == "MobilenetV2/Conv" and first.shape == (32, 3, 3, 3)
    # Dequantised weights are scale · (q − zero_point).
    expected = first.scale[0] * (first.data.astype(np.float64) - first.zero_point[0])
    np.testing.assert_allclose(first.dequantized(), expected, rtol=1e-6)


@needs_graphs
def test_tf_geometry_is_reproduced() -> None:
    """TF-slim rates (the block that lost its stride keeps rate 1), α=0.5 channels rounded to 1."""
    model, metadata = convert_tflite(TFLITE / GRAPHS[1])
    features = model.backbone.features
    depthwise_rates = [block.conv[1][0].dilation[0] for block in list(features)[2:18]]
    assert depthwise_rates[12:] == [1, 2, 2, 2]  # features.14 (expanded_conv_13) keeps rate 1
    assert features[2].conv[-2].out_channels == 12  # 24 · 0.5, not rounded up to 16
    assert model.align_corners and metadata["source"]["folded_batchnorm"]


@needs_graphs
def test_unmappable_graph_names_the_op_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    graph = read_tflite(TFLITE / GRAPHS[1])
    graph.operators[5] = dataclasses.replace(graph.operators[5], op="SOFTMAX")
    monkeypatch.setattr(tf_deeplab, "read_tflite", lambda path: graph)
    with pytest.raises(CheckpointError, match="op 5 SOFTMAX"):
        convert_tflite("any.tflite")
    out = tmp_path / "x.pt"
    assert main(["convert", str(TFLITE / GRAPHS[1]), "--out", str(out)]) == 2
    assert not out.exists()


@needs_graphs
def test_unknown_tensor_scope_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    graph = read_tflite(TFLITE / GRAPHS[1])
    weight = graph.tensors[graph.operators[0].inputs[1]]
    graph.tensors[weight.index] = dataclasses.replace(weight, name="Foo/Conv/Conv2D_Fold")
    monkeypatch.setattr(tf_deeplab, "read_tflite", lambda path: graph)
    with pytest.raises(CheckpointError, match="Foo/Conv"):
        convert_tflite("any.tflite")


def test_non_tflite_files_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match="not a TensorFlow Lite model"):
        read_tflite(junk)
    damaged = tmp_path / "damaged.tflite"
    damaged.write_bytes(b"\xff\xff\xff\x7fTFL3" + b"\x00" * 16)
    with pytest.raises(ModelFileError, match="damaged"):
        read_tflite(damaged)


@needs_graphs
def test_cli_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "voc.pt"
    out.write_bytes(b"user data")
    assert main(["convert", str(TFLITE / GRAPHS[1]), "--out", str(out)]) == 2
    assert out.read_bytes() == b"user data"
    assert main(["convert", str(TFLITE / GRAPHS[1]), "--out", str(TFLITE / GRAPHS[1])]) == 2


CITYSCAPES_GRAPH = "deeplab_mobilenet_edgetpu_slim_cityscapes_quant.tflite"
CAMVID = ROOT.parent / "shared" / "data" / "camvid"


@pytest.fixture(scope="module")
def cityscapes_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (TFLITE / CITYSCAPES_GRAPH).is_file():
        pytest.skip("../shared/data/deeplab-tflite has no Cityscapes graph")
    out = tmp_path_factory.mktemp("cityscapes") / "cityscapes.pt"
    assert main(["convert", str(TFLITE / CITYSCAPES_GRAPH), "--out", str(out)]) == 0
    return out


def street_frames_513() -> dict[str, np.ndarray]:
    """cityscapes.bmp and, where CamVid is present, three of its frames squashed to 513×513."""
    frames = {"cityscapes.bmp": photo_513("cityscapes.bmp")}
    for split, name in (("train", "0001TP_007770.png"), ("train", "0006R0_f01260.png"), ("val", "0016E5_07959.png")):
        path = CAMVID / split / name
        if path.is_file():
            frames[name] = np.asarray(Image.open(path).convert("RGB").resize((513, 513), Image.BILINEAR))
    return frames


def test_cityscapes_model_is_edgetpu_with_the_graphs_head(cityscapes_checkpoint: Path) -> None:
    model = load_model(cityscapes_checkpoint)
    config = model.config
    assert config["name"] == "deeplabv3_mobilenet_edgetpu" and config["aspp_channels"] == 128
    assert config["backbone_options"] == {"width_mult": 0.75, "slim_rates": True} and model.output_stride == 16
    assert model.class_names[0] == "road" and model.class_names[-1] == "bicycle" and len(model.class_names) == 19
    assert model.palette[13] == (0, 0, 142)  # car, Cityscapes colours
    assert model.mean == model.std == (128 / 255,) * 3
    grids = config["activation_quant"]
    # Image pooling saturates at 255 · 0.0089 ≈ 2.27, then is requantised to the concat's grid.
    pooling = grids["head.0.convs.1"]
    assert len(pooling) == 2 and 255 * pooling[0][0] == pytest.approx(2.27, abs=0.01)
    with torch.no_grad():
        pooled = model.head[0].convs[1](torch.full((1, 1280, 5, 5), 3.0))
    assert float(pooled.max()) <= 2.28


def test_cityscapes_model_agrees_with_litert_on_street_frames(cityscapes_checkpoint: Path) -> None:
    """Through the Predictor, as `atrous predict` runs it (float, with the graph's activation grids)."""
    from atrous.inference import Predictor

    predictor = Predictor(load_model(cityscapes_checkpoint))
    agreements = {
        name: float((predictor.predict(image) == litert_labels(CITYSCAPES_GRAPH, image)).mean())
        for name, image in street_frames_513().items()
    }
    print(
        "Cityscapes graph: label agreement with LiteRT "
        + ", ".join(f"{k} {100 * v:.2f} %" for k, v in agreements.items())
    )
    assert min(agreements.values()) >= 0.93
    assert np.mean(list(agreements.values())) >= 0.97


def test_cityscapes_model_runs_at_any_size_and_exports(cityscapes_checkpoint: Path, tmp_path: Path) -> None:
    from atrous.exporters import export_onnx

    model = load_model(cityscapes_checkpoint)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 360, 480)).shape == (1, 19, 360, 480)
    report = export_onnx(model, tmp_path / "cityscapes.onnx", input_size=(257, 321))
    assert report.argmax_agreement >= 0.95


@pytest.mark.skipif(not CAMVID.is_dir(), reason="../shared/data/camvid is not present")
def test_cityscapes_model_fine_tunes_on_camvid_with_a_class_map(cityscapes_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", "--model", "deeplabv3_mobilenet_edgetpu", "--data", str(CAMVID), "--pretrained", str(cityscapes_checkpoint),
            "--pretrained-class-map", "cityscapes_to_camvid", "--freeze-bn", "--epochs", "1", "--max-iters", "1",
            "--batch-size", "2", "--crop-size", "129", "--val-every", "0", "--workers", "0", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    model = load_model(out / "last.pt")
    assert model.num_classes == 11 and "activation_quant" not in model.config  # fine-tuned in float
    assert model.mean == (128 / 255,) * 3  # the graph's preprocessing carries over


def test_the_grids_can_be_dropped_for_speed(cityscapes_checkpoint: Path) -> None:
    from atrous.models import with_options

    model = load_model(cityscapes_checkpoint)
    plain = with_options(model, activation_quant=None)
    assert "activation_quant" not in plain.config and plain.class_names == model.class_names
    image = photo_513("cityscapes.bmp")
    assert (atrous_labels(plain, image) == atrous_labels(model, image)).mean() > 0.97  # the same street scene


@needs_graphs
def test_a_graph_with_an_infinite_quantisation_scale_is_one_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import struct

    from atrous.convert import tflite_reader as reader

    buf = bytearray((TFLITE / GRAPHS[1]).read_bytes())
    model = reader._Table(bytes(buf), struct.unpack_from("<I", buf, 0)[0])
    tensors = model.tables(reader.ModelField.SUBGRAPHS)[0].tables(reader.SubGraphField.TENSORS)
    quantised = next(
        t
        for t in tensors
        if "weights" in t.string(reader.TensorField.NAME)
        and t.table(reader.TensorField.QUANTIZATION) is not None
        and t.table(reader.TensorField.QUANTIZATION).vector(reader.QuantizationField.SCALE, "f")
    )
    scale_at = quantised.table(reader.TensorField.QUANTIZATION)._target(reader.QuantizationField.SCALE) + 4
    struct.pack_into("<f", buf, scale_at, float("inf"))
    damaged = tmp_path / "inf_scale.tflite"
    damaged.write_bytes(bytes(buf))
    capsys.readouterr()
    assert main(["convert", str(damaged), "--out", str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "non-finite quantisation scale (inf)" in err, err
    assert "RuntimeWarning" not in err and not (tmp_path / "out.pt").exists()
