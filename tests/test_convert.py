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
from atrous.convert import convert_tflite, read_tflite
from atrous.convert import tf_deeplab
from atrous.errors import CheckpointError

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
    assert model.mean == model.std == (0.5, 0.5, 0.5) and model.output_stride == 16
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
    with pytest.raises(CheckpointError, match="not a TensorFlow Lite model"):
        read_tflite(junk)
    damaged = tmp_path / "damaged.tflite"
    damaged.write_bytes(b"\xff\xff\xff\x7fTFL3" + b"\x00" * 16)
    with pytest.raises(CheckpointError, match="damaged"):
        read_tflite(damaged)


@needs_graphs
def test_cli_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "voc.pt"
    out.write_bytes(b"user data")
    assert main(["convert", str(TFLITE / GRAPHS[1]), "--out", str(out)]) == 2
    assert out.read_bytes() == b"user data"
    assert main(["convert", str(TFLITE / GRAPHS[1]), "--out", str(TFLITE / GRAPHS[1])]) == 2
