"""A reader for TensorFlow Lite model files (the FlatBuffers ``TFL3`` format), in plain Python.

Reads what an importer needs and nothing more: the first subgraph's tensors (name,
shape, type, quantisation, constant data) and operators (builtin op name, inputs,
outputs, the options of the ops DeepLab graphs use). No TensorFlow, LiteRT or
``flatbuffers`` package is needed, and nothing in the file is executed.

Field numbers follow TensorFlow's ``tensorflow/lite/schema/schema.fbs``; each table's are
named in a class below (``TensorField.SHAPE`` …). A file that is not one, or is
truncated or damaged, raises one ``ModelFileError``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from atrous.errors import ModelFileError
from atrous.files import file_kind, read_problem

# BuiltinOperator codes (schema.fbs) of the ops an importer may meet; others keep their number.
BUILTIN_OPS = {
    0: "ADD",
    1: "AVERAGE_POOL_2D",
    2: "CONCATENATION",
    3: "CONV_2D",
    4: "DEPTHWISE_CONV_2D",
    6: "DEQUANTIZE",
    14: "LOGISTIC",
    17: "MAX_POOL_2D",
    18: "MUL",
    19: "RELU",
    21: "RELU6",
    22: "RESHAPE",
    23: "RESIZE_BILINEAR",
    25: "SOFTMAX",
    34: "PAD",
    40: "MEAN",
    56: "ARG_MAX",
    69: "TILE",
    97: "RESIZE_NEAREST_NEIGHBOR",
    114: "QUANTIZE",
}
# TensorType → NumPy dtype.
TENSOR_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 7: np.int16, 9: np.int8}
ACTIVATIONS = {0: None, 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH"}
PADDINGS = {0: "SAME", 1: "VALID"}


# Field numbers (the order of the fields in each schema.fbs table).
class ModelField:
    OPERATOR_CODES, SUBGRAPHS, BUFFERS, METADATA = 1, 2, 4, 6


class MetadataField:
    NAME = 0


class OperatorCodeField:
    DEPRECATED_BUILTIN_CODE, CUSTOM_CODE, BUILTIN_CODE = 0, 1, 3


class BufferField:
    DATA = 0


class SubGraphField:
    TENSORS, INPUTS, OUTPUTS, OPERATORS = 0, 1, 2, 3


class TensorField:
    SHAPE, TYPE, BUFFER, NAME, QUANTIZATION = 0, 1, 2, 3, 4


class QuantizationField:
    SCALE, ZERO_POINT = 2, 3


class OperatorField:
    OPCODE_INDEX, INPUTS, OUTPUTS, BUILTIN_OPTIONS = 0, 1, 2, 4


class Conv2DOptionsField:
    PADDING, STRIDE_W, STRIDE_H, ACTIVATION, DILATION_W, DILATION_H = 0, 1, 2, 3, 4, 5


class DepthwiseConv2DOptionsField:
    PADDING, STRIDE_W, STRIDE_H, DEPTH_MULTIPLIER, ACTIVATION, DILATION_W, DILATION_H = 0, 1, 2, 3, 4, 5, 6


class Pool2DOptionsField:
    PADDING, STRIDE_W, STRIDE_H, FILTER_W, FILTER_H, ACTIVATION = 0, 1, 2, 3, 4, 5


class AddOptionsField:
    ACTIVATION = 0


class ConcatenationOptionsField:
    AXIS, ACTIVATION = 0, 1


class ResizeBilinearOptionsField:
    ALIGN_CORNERS, HALF_PIXEL_CENTERS = 2, 3


class _Table:
    """One FlatBuffers table: field ``i`` read through the table's vtable."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos
        vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vtable = vtable
        self.vtable_size = struct.unpack_from("<H", buf, vtable)[0]

    def _offset(self, index: int) -> int:
        slot = 4 + 2 * index
        return struct.unpack_from("<H", self.buf, self.vtable + slot)[0] if slot < self.vtable_size else 0

    def scalar(self, index: int, fmt: str, default: Any = 0) -> Any:
        offset = self._offset(index)
        return struct.unpack_from("<" + fmt, self.buf, self.pos + offset)[0] if offset else default

    def _target(self, index: int) -> int | None:
        offset = self._offset(index)
        if not offset:
            return None
        at = self.pos + offset
        return at + struct.unpack_from("<I", self.buf, at)[0]

    def table(self, index: int) -> _Table | None:
        target = self._target(index)
        return None if target is None else _Table(self.buf, target)

    def string(self, index: int) -> str:
        target = self._target(index)
        if target is None:
            return ""
        length = struct.unpack_from("<I", self.buf, target)[0]
        return self.buf[target + 4 : target + 4 + length].decode("utf-8", "replace")

    def vector(self, index: int, fmt: str) -> list[Any]:
        target = self._target(index)
        if target is None:
            return []
        length = struct.unpack_from("<I", self.buf, target)[0]
        return list(struct.unpack_from(f"<{length}{fmt}", self.buf, target + 4))

    def raw_vector(self, index: int) -> bytes:
        target = self._target(index)
        if target is None:
            return b""
        length = struct.unpack_from("<I", self.buf, target)[0]
        return self.buf[target + 4 : target + 4 + length]

    def tables(self, index: int) -> list[_Table]:
        target = self._target(index)
        if target is None:
            return []
        length = struct.unpack_from("<I", self.buf, target)[0]
        items = []
        for i in range(length):
            at = target + 4 + 4 * i
            items.append(_Table(self.buf, at + struct.unpack_from("<I", self.buf, at)[0]))
        return items


@dataclass
class Tensor:
    """A graph tensor. ``data`` holds a constant's values (raw, still quantised), else None."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: type
    scale: np.ndarray | None
    zero_point: np.ndarray | None
    data: np.ndarray | None

    def dequantized(self) -> np.ndarray:
        """The constant as float32: ``scale · (q − zero_point)``, per tensor or per output channel."""
        if self.data is None:
            raise ModelFileError(f"tensor {self.name!r} is not a constant")
        values = self.data.astype(np.float64)
        if self.scale is None or self.dtype in (np.float32, np.float16):
            return values.astype(np.float32)
        shape = (-1,) + (1,) * (values.ndim - 1) if self.scale.size > 1 else ()
        scale = self.scale.reshape(shape) if shape else self.scale.item()
        zero = self.zero_point.reshape(shape) if shape else self.zero_point.item()
        with np.errstate(all="ignore"):  # an overflow is refused below, by name, not warned about
            result = (scale * (values - zero)).astype(np.float32)
        if not np.isfinite(result).all():
            raise ModelFileError(
                f"tensor {self.name!r} dequantises to non-finite values (scale up to {np.abs(self.scale).max():g}); "
                "the graph is damaged"
            )
        return result


@dataclass
class Operator:
    """A graph operator: its builtin name, tensor indices and decoded options."""

    index: int
    op: str
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    """The first subgraph of a TFLite model."""

    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]
    metadata: tuple[str, ...] = ()  # names of the model's metadata entries ("atrous": written by atrous export)


def _options(op: str, table: _Table | None) -> dict[str, Any]:
    if table is None:
        return {}
    if op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        f = DepthwiseConv2DOptionsField if op == "DEPTHWISE_CONV_2D" else Conv2DOptionsField
        return {
            "padding": PADDINGS.get(table.scalar(f.PADDING, "b")),
            "stride": (table.scalar(f.STRIDE_H, "i"), table.scalar(f.STRIDE_W, "i")),
            "activation": ACTIVATIONS.get(table.scalar(f.ACTIVATION, "b"), "?"),
            "dilation": (table.scalar(f.DILATION_H, "i", 1), table.scalar(f.DILATION_W, "i", 1)),
            **({"depth_multiplier": table.scalar(f.DEPTH_MULTIPLIER, "i", 1)} if op == "DEPTHWISE_CONV_2D" else {}),
        }
    if op in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        f = Pool2DOptionsField
        return {
            "padding": PADDINGS.get(table.scalar(f.PADDING, "b")),
            "stride": (table.scalar(f.STRIDE_H, "i"), table.scalar(f.STRIDE_W, "i")),
            "kernel": (table.scalar(f.FILTER_H, "i"), table.scalar(f.FILTER_W, "i")),
            "activation": ACTIVATIONS.get(table.scalar(f.ACTIVATION, "b"), "?"),
        }
    if op == "ADD":
        return {"activation": ACTIVATIONS.get(table.scalar(AddOptionsField.ACTIVATION, "b"), "?")}
    if op == "CONCATENATION":
        f = ConcatenationOptionsField
        return {"axis": table.scalar(f.AXIS, "i"), "activation": ACTIVATIONS.get(table.scalar(f.ACTIVATION, "b"), "?")}
    if op == "RESIZE_BILINEAR":
        f = ResizeBilinearOptionsField
        return {
            "align_corners": bool(table.scalar(f.ALIGN_CORNERS, "B")),
            "half_pixel_centers": bool(table.scalar(f.HALF_PIXEL_CENTERS, "B")),
        }
    return {}


# What damaged bytes can make the parser meet: every one becomes one ModelFileError.
_PARSE_ERRORS = (struct.error, IndexError, ValueError, KeyError, TypeError, OverflowError, MemoryError, RecursionError)


def read_tflite(path: str | Path) -> Graph:
    """Parse a ``.tflite`` file into a :class:`Graph` (``ModelFileError`` if it is not one)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path} does not exist (or is not a file)")
    problem = read_problem(path)
    if problem:
        raise ModelFileError(f"{path}: {problem}")
    kind = file_kind(path)
    if kind != "a TensorFlow Lite model":
        raise ModelFileError(f"{path} is not a TensorFlow Lite model (it looks like {kind})")
    return parse_tflite(path.read_bytes(), str(path))


def parse_tflite(buf: bytes, name: str = "the model") -> Graph:
    """Parse the bytes of a ``.tflite`` file (``ModelFileError`` naming ``name`` if they are not one)."""
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ModelFileError(f"{name} is not a TensorFlow Lite model (no 'TFL3' file identifier)")
    try:
        return _parse(buf)
    except _PARSE_ERRORS as error:
        raise ModelFileError(f"{name} is a damaged TensorFlow Lite file ({type(error).__name__}: {error})") from None


def _parse(buf: bytes) -> Graph:
    model = _Table(buf, struct.unpack_from("<I", buf, 0)[0])
    codes = []
    for code in model.tables(ModelField.OPERATOR_CODES):
        builtin = max(
            code.scalar(OperatorCodeField.DEPRECATED_BUILTIN_CODE, "b"),
            code.scalar(OperatorCodeField.BUILTIN_CODE, "i"),
        )
        codes.append(code.string(OperatorCodeField.CUSTOM_CODE) or BUILTIN_OPS.get(builtin, f"BUILTIN_{builtin}"))
    buffers = [b.raw_vector(BufferField.DATA) for b in model.tables(ModelField.BUFFERS)]
    subgraphs = model.tables(ModelField.SUBGRAPHS)
    if not subgraphs:
        raise ValueError("no subgraph")
    graph = subgraphs[0]
    tensors = []
    for index, t in enumerate(graph.tables(SubGraphField.TENSORS)):
        dtype = TENSOR_TYPES.get(t.scalar(TensorField.TYPE, "b"))
        shape = tuple(t.vector(TensorField.SHAPE, "i"))
        buffer = t.scalar(TensorField.BUFFER, "I")
        raw = buffers[buffer] if buffer < len(buffers) else b""
        data = np.frombuffer(raw, dtype=dtype).reshape(shape).copy() if raw and dtype is not None else None
        quant = t.table(TensorField.QUANTIZATION)
        scale = zero = None
        if quant is not None and quant.vector(QuantizationField.SCALE, "f"):
            scale = np.asarray(quant.vector(QuantizationField.SCALE, "f"), dtype=np.float64)
            zero = np.asarray(quant.vector(QuantizationField.ZERO_POINT, "q"), dtype=np.float64)
            if not np.isfinite(scale).all():
                bad = scale[~np.isfinite(scale)][0]
                raise ValueError(f"tensor {t.string(TensorField.NAME)!r} has a non-finite quantisation scale ({bad})")
        tensors.append(Tensor(index, t.string(TensorField.NAME), shape, dtype, scale, zero, data))
    operators = []
    for index, o in enumerate(graph.tables(SubGraphField.OPERATORS)):
        op = codes[o.scalar(OperatorField.OPCODE_INDEX, "I")]
        inputs, outputs = o.vector(OperatorField.INPUTS, "i"), o.vector(OperatorField.OUTPUTS, "i")
        operators.append(Operator(index, op, inputs, outputs, _options(op, o.table(OperatorField.BUILTIN_OPTIONS))))
    metadata = tuple(entry.string(MetadataField.NAME) for entry in model.tables(ModelField.METADATA))
    return Graph(
        tensors, operators, graph.vector(SubGraphField.INPUTS, "i"), graph.vector(SubGraphField.OUTPUTS, "i"), metadata
    )
