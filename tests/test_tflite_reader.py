"""The TFLite reader on small files built here with FlatBuffers (no ../shared needed):
fields read back as written, and truncated or corrupt bytes give one ModelFileError."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from atrous.convert.tflite_reader import Graph, parse_tflite, read_tflite
from atrous.errors import ModelFileError

flatbuffers = pytest.importorskip("flatbuffers")  # comes with ai-edge-litert (the tflite extra)

WEIGHTS = np.arange(2 * 3 * 3 * 2, dtype=np.int8).reshape(2, 3, 3, 2) - 10  # OHWI, int8
SCALES = [0.5, 0.25]  # per output channel


def _vector(builder, values, prepend, size: int):
    builder.StartVector(size, len(values), size)
    for value in reversed(values):
        prepend(value)
    return builder.EndVector()


def _tables(builder, offsets):
    return _vector(builder, offsets, builder.PrependUOffsetTRelative, 4)


def tiny_conv_graph(metadata: str | None = None) -> bytes:
    """A one-op graph: input (1, 8, 8, 2) → CONV_2D (int8 weights, stride 2, dilation 2, RELU6) → output;
    ``metadata``: the name of a metadata entry (on the empty buffer 0), as exporters add them."""
    b = flatbuffers.Builder(1024)
    buffers = []
    for data in (b"", WEIGHTS.tobytes(), np.array([1, -1], dtype=np.int32).tobytes()):
        vector = b.CreateByteVector(data) if data else None
        b.StartObject(1)
        if vector is not None:
            b.PrependUOffsetTRelativeSlot(0, vector, 0)
        buffers.append(b.EndObject())

    def tensor(name: str, shape: list[int], dtype: int, buffer: int, scales: list[float] | None = None) -> int:
        name_offset = b.CreateString(name)
        shape_offset = _vector(b, shape, b.PrependInt32, 4)
        quant = None
        if scales:
            scale_offset = _vector(b, scales, b.PrependFloat32, 4)
            zero_offset = _vector(b, [0] * len(scales), b.PrependInt64, 8)
            b.StartObject(4)
            b.PrependUOffsetTRelativeSlot(2, scale_offset, 0)
            b.PrependUOffsetTRelativeSlot(3, zero_offset, 0)
            quant = b.EndObject()
        b.StartObject(5)
        b.PrependUOffsetTRelativeSlot(0, shape_offset, 0)
        b.PrependInt8Slot(1, dtype, 0)
        b.PrependUint32Slot(2, buffer, 0)
        b.PrependUOffsetTRelativeSlot(3, name_offset, 0)
        if quant is not None:
            b.PrependUOffsetTRelativeSlot(4, quant, 0)
        return b.EndObject()

    tensors = [
        tensor("input", [1, 8, 8, 2], 0, 0),
        tensor("Conv/weights", list(WEIGHTS.shape), 9, 1, SCALES),
        tensor("Conv/bias", [2], 2, 2),
        tensor("output", [1, 4, 4, 2], 0, 0),
    ]
    b.StartObject(6)  # Conv2DOptions
    b.PrependInt8Slot(0, 0, 0)  # SAME
    b.PrependInt32Slot(1, 2, 0)  # stride w
    b.PrependInt32Slot(2, 2, 0)  # stride h
    b.PrependInt8Slot(3, 3, 0)  # RELU6
    b.PrependInt32Slot(4, 2, 1)  # dilation w
    b.PrependInt32Slot(5, 2, 1)  # dilation h
    options = b.EndObject()
    inputs, outputs = _vector(b, [0, 1, 2], b.PrependInt32, 4), _vector(b, [3], b.PrependInt32, 4)
    b.StartObject(5)
    b.PrependUint32Slot(0, 0, 0)
    b.PrependUOffsetTRelativeSlot(1, inputs, 0)
    b.PrependUOffsetTRelativeSlot(2, outputs, 0)
    b.PrependUint8Slot(3, 1, 0)  # builtin_options_type: Conv2DOptions
    b.PrependUOffsetTRelativeSlot(4, options, 0)
    operator = b.EndObject()

    tensor_vector, operator_vector = _tables(b, tensors), _tables(b, [operator])
    graph_inputs, graph_outputs = _vector(b, [0], b.PrependInt32, 4), _vector(b, [3], b.PrependInt32, 4)
    b.StartObject(5)
    b.PrependUOffsetTRelativeSlot(0, tensor_vector, 0)
    b.PrependUOffsetTRelativeSlot(1, graph_inputs, 0)
    b.PrependUOffsetTRelativeSlot(2, graph_outputs, 0)
    b.PrependUOffsetTRelativeSlot(3, operator_vector, 0)
    subgraph = b.EndObject()
    b.StartObject(4)  # OperatorCode
    b.PrependInt8Slot(0, 3, 0)  # deprecated_builtin_code: CONV_2D
    b.PrependInt32Slot(3, 3, 0)  # builtin_code
    code = b.EndObject()

    entries = None
    if metadata is not None:
        name = b.CreateString(metadata)
        b.StartObject(2)  # Metadata
        b.PrependUOffsetTRelativeSlot(0, name, 0)
        b.PrependUint32Slot(1, 0, 0)
        entries = _tables(b, [b.EndObject()])
    codes, subgraphs, buffer_vector = _tables(b, [code]), _tables(b, [subgraph]), _tables(b, buffers)
    b.StartObject(7)  # Model
    b.PrependUint32Slot(0, 3, 0)
    b.PrependUOffsetTRelativeSlot(1, codes, 0)
    b.PrependUOffsetTRelativeSlot(2, subgraphs, 0)
    b.PrependUOffsetTRelativeSlot(4, buffer_vector, 0)
    if entries is not None:
        b.PrependUOffsetTRelativeSlot(6, entries, 0)
    b.Finish(b.EndObject(), file_identifier=b"TFL3")
    return bytes(b.Output())


def test_fields_read_back_as_written(tmp_path: Path) -> None:
    path = tmp_path / "tiny.tflite"
    path.write_bytes(tiny_conv_graph())
    graph = read_tflite(path)
    assert [t.name for t in graph.tensors] == ["input", "Conv/weights", "Conv/bias", "output"]
    assert graph.inputs == [0] and graph.outputs == [3]
    weights = graph.tensors[1]
    assert weights.shape == (2, 3, 3, 2) and weights.dtype is np.int8
    np.testing.assert_array_equal(weights.data, WEIGHTS)
    expected = WEIGHTS.astype(np.float32) * np.array(SCALES, dtype=np.float32).reshape(2, 1, 1, 1)
    np.testing.assert_allclose(weights.dequantized(), expected)
    np.testing.assert_array_equal(graph.tensors[2].data, [1, -1])
    assert graph.tensors[0].data is None  # an activation, not a constant
    (op,) = graph.operators
    assert op.op == "CONV_2D" and op.inputs == [0, 1, 2] and op.outputs == [3]
    assert op.options == {"padding": "SAME", "stride": (2, 2), "activation": "RELU6", "dilation": (2, 2)}
    with pytest.raises(ModelFileError, match="not a constant"):
        graph.tensors[0].dequantized()


@pytest.mark.timeout(120)
def test_truncated_files_give_one_clear_error() -> None:
    data = tiny_conv_graph()
    for length in range(0, len(data), 3):
        try:
            graph = parse_tflite(data[:length], "cut.tflite")
        except ModelFileError as error:
            assert "cut.tflite" in str(error) and "\n" not in str(error)
        else:  # a cut that only drops padding may still parse: then it reads the same graph
            assert isinstance(graph, Graph)


@pytest.mark.timeout(120)
def test_corrupt_bytes_give_one_clear_error_never_a_traceback() -> None:
    data = tiny_conv_graph()
    rng = random.Random(0)
    refused = 0
    for _ in range(400):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            damaged[rng.randrange(8, len(damaged))] = rng.randrange(256)  # keep the identifier
        try:
            parse_tflite(bytes(damaged), "bad.tflite")
        except ModelFileError:
            refused += 1
    assert refused > 50  # damage is noticed, not silently read back (most flips hit offsets or lengths)


def test_files_that_are_not_tflite_are_named(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="does not exist"):
        read_tflite(tmp_path / "absent.tflite")
    (tmp_path / "photo.tflite").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)
    with pytest.raises(ModelFileError, match="photo.tflite is not a TensorFlow Lite model"):
        read_tflite(tmp_path / "photo.tflite")


def test_metadata_entries_are_read_by_name(tmp_path: Path) -> None:
    assert parse_tflite(tiny_conv_graph()).metadata == ()
    assert parse_tflite(tiny_conv_graph(metadata="atrous")).metadata == ("atrous",)


def test_convert_sends_atrous_own_export_back_to_its_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from atrous.cli import main

    exported = tmp_path / "mine.tflite"
    exported.write_bytes(tiny_conv_graph(metadata="atrous"))  # what `atrous export --format tflite` writes
    assert main(["convert", str(exported), "--out", str(tmp_path / "back.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1 and "was written by `atrous export`" in err and "checkpoint it was exported" in err
    )
    assert not (tmp_path / "back.pt").exists()


@pytest.mark.filterwarnings("ignore:`torch.jit.save` is deprecated:FutureWarning")
def test_a_file_of_another_kind_is_named_by_what_it_looks_like(tmp_path: Path) -> None:
    import torch

    program = tmp_path / "m.tflite"
    torch.jit.save(torch.jit.script(torch.nn.ReLU()), program)
    with pytest.raises(ModelFileError, match=r"m.tflite is not a TensorFlow Lite model \(it looks like a TorchScript"):
        read_tflite(program)
