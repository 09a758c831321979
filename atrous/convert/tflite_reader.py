"""A reader for TensorFlow Lite model files (the FlatBuffers ``TFL3`` format), in plain Python.

Reads what an importer needs and nothing more: the first subgraph's tensors (name,
shape, type, quantisation, constant data) and operators (builtin op name, inputs,
outputs, the options of the ops DeepLab graphs use). No TensorFlow, LiteRT or
``flatbuffers`` package is needed, and nothing in the file is executed.

Field numbers follow TensorFlow's ``tensorflow/lite/schema/schema.fbs``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from atrous.errors import CheckpointError

# BuiltinOperator codes (schema.fbs) of the ops an importer may meet; others keep their number.
BUILTIN_OPS = {
    0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D",
    6: "DEQUANTIZE", 14: "LOGISTIC", 17: "MAX_POOL_2D", 18: "MUL", 19: "RELU", 21: "RELU6",
    22: "RESHAPE", 23: "RESIZE_BILINEAR", 25: "SOFTMAX", 34: "PAD", 40: "MEAN", 56: "ARG_MAX", 69: "TILE",
    97: "RESIZE_NEAREST_NEIGHBOR", 114: "QUANTIZE",
}
# TensorType → NumPy dtype.
TENSOR_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 7: np.int16, 9: np.int8}
ACTIVATIONS = {0: None, 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH"}
PADDINGS = {0: "SAME", 1: "VALID"}


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
            raise CheckpointError(f"tensor {self.name!r} is not a constant")
        values = self.data.astype(np.float64)
        if self.scale is None or self.dtype in (np.float32, np.float16):
            return values.astype(np.float32)
        shape = (-1,) + (1,) * (values.ndim - 1) if self.scale.size > 1 else ()
        scale = self.scale.reshape(shape) if shape else self.scale.item()
        zero = self.zero_point.reshape(shape) if shape else self.zero_point.item()
        return (scale * (values - zero)).astype(np.float32)


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


def _options(op: str, table: _Table | None) -> dict[str, Any]:
    if table is None:
        return {}
    if op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        depthwise = op == "DEPTHWISE_CONV_2D"
        act, dil_w, dil_h = (4, 5, 6) if depthwise else (3, 4, 5)
        return {
            "padding": PADDINGS.get(table.scalar(0, "b")),
            "stride": (table.scalar(2, "i"), table.scalar(1, "i")),
            "activation": ACTIVATIONS.get(table.scalar(act, "b"), "?"),
            "dilation": (table.scalar(dil_h, "i", 1), table.scalar(dil_w, "i", 1)),
            **({"depth_multiplier": table.scalar(3, "i", 1)} if depthwise else {}),
        }
    if op in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        return {
            "padding": PADDINGS.get(table.scalar(0, "b")),
            "stride": (table.scalar(2, "i"), table.scalar(1, "i")),
            "kernel": (table.scalar(4, "i"), table.scalar(3, "i")),
            "activation": ACTIVATIONS.get(table.scalar(5, "b"), "?"),
        }
    if op == "ADD":
        return {"activation": ACTIVATIONS.get(table.scalar(0, "b"), "?")}
    if op == "CONCATENATION":
        return {"axis": table.scalar(0, "i"), "activation": ACTIVATIONS.get(table.scalar(1, "b"), "?")}
    if op == "RESIZE_BILINEAR":
        return {"align_corners": bool(table.scalar(2, "B")), "half_pixel_centers": bool(table.scalar(3, "B"))}
    return {}


def read_tflite(path: str | Path) -> Graph:
    """Parse a ``.tflite`` file into a :class:`Graph` (``CheckpointError`` if it is not one)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist (or is not a file)")
    buf = path.read_bytes()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise CheckpointError(f"{path} is not a TensorFlow Lite model (no 'TFL3' file identifier)")
    try:
        return _parse(buf)
    except (struct.error, IndexError, ValueError) as error:
        raise CheckpointError(f"{path} is a damaged TensorFlow Lite file ({error})") from None


def _parse(buf: bytes) -> Graph:
    model = _Table(buf, struct.unpack_from("<I", buf, 0)[0])
    codes = []
    for code in model.tables(1):
        builtin = max(code.scalar(0, "b"), code.scalar(3, "i"))
        codes.append(code.string(1) or BUILTIN_OPS.get(builtin, f"BUILTIN_{builtin}"))
    buffers = [b.raw_vector(0) for b in model.tables(4)]
    subgraphs = model.tables(2)
    if not subgraphs:
        raise ValueError("no subgraph")
    graph = subgraphs[0]
    tensors = []
    for index, t in enumerate(graph.tables(0)):
        dtype = TENSOR_TYPES.get(t.scalar(1, "b"))
        shape = tuple(t.vector(0, "i"))
        raw = buffers[t.scalar(2, "I")] if t.scalar(2, "I") < len(buffers) else b""
        data = np.frombuffer(raw, dtype=dtype).reshape(shape).copy() if raw and dtype is not None else None
        quant = t.table(4)
        scale = zero = None
        if quant is not None and quant.vector(2, "f"):
            scale = np.asarray(quant.vector(2, "f"), dtype=np.float64)
            zero = np.asarray(quant.vector(3, "q"), dtype=np.float64)
        tensors.append(Tensor(index, t.string(3), shape, dtype, scale, zero, data))
    operators = []
    for index, o in enumerate(graph.tables(3)):
        op = codes[o.scalar(0, "I")]
        operators.append(Operator(index, op, o.vector(1, "i"), o.vector(2, "i"), _options(op, o.table(4))))
    return Graph(tensors, operators, graph.vector(1, "i"), graph.vector(2, "i"))
