"""Running TFLite files written by ``atrous export --format tflite`` with the LiteRT interpreter.

Such a file takes one NHWC image (1, H, W, 3), float32 normalised with the stored
mean/std or, for an int8 graph, its int8 quantisation; it outputs logits (1, K, H, W)
(float32 or int8 with scale/zero point) or labels (1, H, W). Its ``atrous`` metadata
entry holds JSON: class names, palette, mean, std, model config, input size.

Needs ``ai-edge-litert`` (``pip install 'atrous[tflite]'``), imported on first use.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atrous.errors import ConfigError, DataError, InputError, ModelFileError, first_line
from atrous.exporters.runtime import attach_exported_metadata

__all__ = ["METADATA_NAME", "TfliteModel", "litert_schema", "read_tflite_metadata", "silenced_output"]

METADATA_NAME = "atrous"


@contextlib.contextmanager
def silenced_output() -> Iterator[None]:
    """Discard what the block writes to stdout and stderr, from Python and from C++ alike
    (the TFLite converter's progress lines, absl warnings, XNNPACK's "Created delegate")."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise ConfigError("running .tflite files needs the LiteRT interpreter: pip install 'atrous[tflite]'") from None
    return Interpreter


def litert_schema() -> Any:
    """The TFLite flatbuffer schema (generated Python) that ships with ai-edge-litert."""
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        raise ConfigError("reading .tflite metadata needs ai-edge-litert: pip install 'atrous[tflite]'") from None
    return schema_py_generated


def read_tflite_metadata(flatbuffer: bytes) -> dict[str, Any]:
    """The JSON of the file's ``atrous`` metadata entry ({} when it has none)."""
    schema = litert_schema()
    model = schema.Model.GetRootAs(flatbuffer, 0)
    for index in range(model.MetadataLength()):
        entry = model.Metadata(index)
        if entry.Name() in (METADATA_NAME, METADATA_NAME.encode()):
            buffer = model.Buffers(entry.Buffer())
            if buffer.Offset() > 1:  # a large model's buffers live after the flatbuffer itself
                data = flatbuffer[buffer.Offset() : buffer.Offset() + buffer.Size()]
            else:
                data = buffer.DataAsNumpy()
                data = bytes(data) if isinstance(data, np.ndarray) else b""
            return json.loads(bytes(data).decode()) if data else {}
    return {}


def _check_structure(flatbuffer: bytes) -> None:
    """``ValueError`` (or the flatbuffer reader's ``struct.error`` / ``IndexError``) unless
    every table LiteRT will follow lies inside ``flatbuffer``: a subgraph with inputs and
    outputs, tensor and operator indices in range, buffers within the file. LiteRT itself
    trusts the file and can crash the process on a truncated or hand-edited one."""
    schema = litert_schema()
    size = len(flatbuffer)
    model = schema.Model.GetRootAs(flatbuffer, 0)
    buffers, codes = model.BuffersLength(), model.OperatorCodesLength()
    for index in range(buffers):
        buffer = model.Buffers(index)
        if buffer.Offset() > 1 and buffer.Offset() + buffer.Size() > size:
            raise ValueError(f"buffer {index} ends at byte {buffer.Offset() + buffer.Size()} of a {size}-byte file")
        if buffer.DataLength():
            buffer.DataAsNumpy()  # a vector running past the end fails here
    if model.SubgraphsLength() < 1:
        raise ValueError("no subgraph")
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        tensors = graph.TensorsLength()
        if graph.InputsLength() < 1 or graph.OutputsLength() < 1:
            raise ValueError(f"subgraph {g} has no inputs or outputs")
        indices = [*graph.InputsAsNumpy().tolist(), *graph.OutputsAsNumpy().tolist()]
        for t in range(tensors):
            tensor = graph.Tensors(t)
            if not tensor.Buffer() < max(buffers, 1):
                raise ValueError(f"tensor {t} names buffer {tensor.Buffer()} of {buffers}")
            tensor.ShapeAsNumpy()
        for o in range(graph.OperatorsLength()):
            operator = graph.Operators(o)
            if not operator.OpcodeIndex() < codes:
                raise ValueError(f"operator {o} names operator code {operator.OpcodeIndex()} of {codes}")
            for accessor in (operator.InputsAsNumpy, operator.OutputsAsNumpy):
                values = accessor()
                if not isinstance(values, int):  # 0: an absent vector
                    indices.extend(values.tolist())
        bad = [i for i in indices if not -1 <= i < tensors]
        if bad:
            raise ValueError(f"subgraph {g} names tensor {bad[0]} of {tensors}")


class TfliteModel:
    """A TFLite file from ``atrous export`` as a callable: (N, 3, H, W) float → logits or labels.

    Carries ``class_names``, ``palette``, ``mean``, ``std``, ``num_classes``,
    ``min_input_size``, ``config``, ``input_size`` and ``outputs_labels`` from the file,
    like :class:`atrous.exporters.OnnxModel`, so :class:`atrous.Predictor`, ``atrous eval``
    and ``atrous predict`` run it. The graph's batch is 1: a batch runs image by image.
    ``resize_to_fit``: the command line resizes images to the graph's size (and the
    scores back) unless told otherwise, as TF DeepLab's own graphs are used.
    """

    resize_to_fit = True

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"TFLite model {self.path} does not exist")
        flatbuffer = self.path.read_bytes()
        if len(flatbuffer) < 8 or flatbuffer[4:8] != b"TFL3":
            raise ModelFileError(
                f"{self.path} is not a TensorFlow Lite model ({'empty' if not flatbuffer else 'no TFL3 file identifier'}); "
                "give a .tflite file written by `atrous export --format tflite`"
            )
        try:
            _check_structure(flatbuffer)
            meta = read_tflite_metadata(flatbuffer)
        except (struct.error, ValueError, IndexError, TypeError, AttributeError, UnicodeDecodeError) as error:
            what = "truncated" if isinstance(error, struct.error) else first_line(error, 120)
            raise ModelFileError(f"{self.path} is a damaged TensorFlow Lite file ({what}); export it again") from None
        if not isinstance(meta, dict):
            raise ModelFileError(f"{self.path}: its atrous metadata is not a JSON object; export it again")
        if not meta:
            raise DataError(
                f"{self.path} is a TFLite file without atrous metadata; export it with `atrous export --format tflite` "
                "(official TF DeepLab graphs: `atrous convert` them first)"
            )
        Interpreter = _interpreter_class()
        try:
            with silenced_output():
                self.interpreter = Interpreter(model_content=flatbuffer, num_threads=threads or torch.get_num_threads())
                self.interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as error:
            raise ModelFileError(f"LiteRT cannot load {self.path}: {str(error).strip()[:300]}") from None
        attach_exported_metadata(self, meta)
        self.int8 = bool(meta.get("int8"))
        (self._input,) = self.interpreter.get_input_details()
        (self._output,) = self.interpreter.get_output_details()
        _, height, width, channels = (int(v) for v in self._input["shape"])
        if channels != 3:
            raise DataError(f"{self.path} takes {channels}-channel NHWC input, not an RGB image")
        self.input_size = (height, width)
        self.outputs_labels = not np.issubdtype(self._output["dtype"], np.floating) and len(self._output["shape"]) == 3

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise InputError(f"expected an image batch of shape (N, 3, H, W); got shape {tuple(images.shape)}")
        if tuple(images.shape[-2:]) != self.input_size:
            h, w = self.input_size
            raise InputError(
                f"{self.path.name} was exported for {h}×{w} inputs but got {images.shape[-2]}×{images.shape[-1]} "
                f"(after any --scales resizing); pass --input-size {h} {w} to resize images to it"
            )
        array = images.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).contiguous().numpy()
        return torch.cat([self._run(frame[None]) for frame in array])

    def _run(self, frame: np.ndarray) -> torch.Tensor:
        dtype = self._input["dtype"]
        if not np.issubdtype(dtype, np.floating):
            scale, zero_point = self._input["quantization"]
            limits = np.iinfo(dtype)
            frame = np.clip(np.round(frame / scale + zero_point), limits.min, limits.max).astype(dtype)
        self.interpreter.set_tensor(self._input["index"], frame)
        self.interpreter.invoke()
        output = self.interpreter.get_tensor(self._output["index"])
        if self.outputs_labels:
            return torch.from_numpy(output.astype(np.int64))
        if not np.issubdtype(output.dtype, np.floating):
            scale, zero_point = self._output["quantization"]
            output = (output.astype(np.float32) - zero_point) * scale
        return torch.from_numpy(np.ascontiguousarray(output, dtype=np.float32))

    def __repr__(self) -> str:
        kind = "int8" if self.int8 else "float"
        return f"TfliteModel({str(self.path)!r}, {kind}, input {self.input_size[0]}×{self.input_size[1]})"
