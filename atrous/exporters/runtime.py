"""Running exported ONNX models with ONNX Runtime, and reading what atrous stored in them.

An atrous ONNX file has one input ``image`` (N, 3, H, W) float32 (normalised with the
stored mean/std) and one output: ``logits`` (N, K, H, W) float32 or, when exported
with ``argmax``, ``labels`` (N, H, W) int64. Its ``metadata_props`` carry
``atrous.*`` entries (JSON): class names, palette, mean, std, model config, input size.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atrous.errors import ConfigError, DataError, InputError, first_line

__all__ = ["METADATA_PREFIX", "OnnxModel", "attach_exported_metadata", "create_session", "read_metadata"]

logger = logging.getLogger(__name__)

METADATA_PREFIX = "atrous."


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:  # pragma: no cover - depends on the installation
        raise ConfigError("ONNX support needs onnxruntime: pip install 'atrous[export]'") from None
    return onnxruntime


def create_session(path: str | Path, *, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU ``InferenceSession`` for ``path`` (``threads`` intra-op threads).

    Worker threads sleep between runs instead of spinning, so an idle session does not
    take CPU from the work around it (PyTorch, data loading, other processes).
    """
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own Fail / InvalidGraph types
        raise DataError(f"{path} is not a loadable ONNX model ({str(error).strip()[:200]})") from None


def read_metadata(session: Any) -> dict[str, Any]:
    """The ``atrous.*`` metadata of a session's model, JSON-decoded, prefix removed."""
    props = session.get_modelmeta().custom_metadata_map
    return {
        key[len(METADATA_PREFIX) :]: json.loads(value)
        for key, value in props.items()
        if key.startswith(METADATA_PREFIX)
    }


def _check_signature(path: Path, inputs: list[Any], outputs: list[Any]) -> None:
    """``DataError`` unless the graph maps one (N, 3, H, W) float image to (N, K, H, W) or (N, H, W)."""
    found = ", ".join(f"{x.name} {x.type} {x.shape}" for x in inputs) or "no inputs"
    shape = inputs[0].shape if len(inputs) == 1 else None
    image_in = shape is not None and len(shape) == 4 and shape[1] in (3, "3") and "float" in inputs[0].type
    out_rank = len(outputs[0].shape) if len(outputs) >= 1 and outputs[0].shape is not None else 0
    if not image_in or out_rank not in (3, 4):
        raise DataError(
            f"{path} is an ONNX model but not a segmentation model as `atrous export` writes them (one float "
            f"image input (N, 3, H, W) → logits (N, K, H, W) or labels (N, H, W); it has {found}); "
            "export the model with `atrous export`"
        )


def attach_exported_metadata(model: Any, meta: dict[str, Any]) -> None:
    """Give ``model`` (an exported-file runner) what atrous stored in the file: ``config``,
    ``class_names``, ``palette``, ``mean``, ``std``, ``min_input_size``, ``num_classes``,
    ``transforms`` (the inference transforms the export applied; () for older files)."""
    model.config = meta.get("config") or {}
    model.class_names = list(meta.get("class_names") or [])
    model.palette = [tuple(c) for c in meta.get("palette") or []]
    model.mean = tuple(meta["mean"]) if meta.get("mean") else None
    model.std = tuple(meta["std"]) if meta.get("std") else None
    model.min_input_size = int(meta.get("min_input_size", 1))
    model.num_classes = meta.get("num_classes") or model.config.get("num_classes") or len(model.class_names) or None
    model.transforms = tuple(str(name) for name in meta.get("transforms") or ())


class OnnxModel:
    """An exported model as a callable: (N, 3, H, W) float tensor → logits or labels.

    Carries ``class_names``, ``palette``, ``mean``, ``std``, ``num_classes``,
    ``min_input_size`` and ``config`` from the file's metadata, so it can stand in for
    a PyTorch model in :class:`atrous.Predictor` and ``atrous eval``. ``input_size`` is
    the static (H, W) it was exported for, or ``None`` for a dynamic-size model; a
    static model given another size raises ``InputError`` (it does not resize silently).
    """

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"ONNX model {self.path} does not exist")
        self.session = create_session(self.path, threads=threads)
        attach_exported_metadata(self, read_metadata(self.session))
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        _check_signature(self.path, inputs, outputs)
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        height, width = inputs[0].shape[2:4]
        self.input_size = (height, width) if isinstance(height, int) and isinstance(width, int) else None
        self.outputs_labels = "int" in outputs[0].type

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise InputError(f"expected an image batch of shape (N, 3, H, W); got shape {tuple(images.shape)}")
        size = tuple(images.shape[-2:])
        if self.input_size is not None and size != self.input_size:
            h, w = self.input_size
            raise InputError(
                f"{self.path.name} was exported for {h}×{w} inputs but got {size[0]}×{size[1]} (after any --scales "
                f"resizing); pass --input-size {h} {w} to resize images to it (input_size= of Predictor), export "
                f"with --dynamic to accept any size, or run in windows of the exported size (--sliding-window {h} when "
                "it is square)"
            )
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        try:
            (output,) = self.session.run([self.output_name], {self.input_name: array})
        except Exception as error:  # onnxruntime's own error types (invalid dimensions …)
            raise InputError(
                f"{self.path.name} cannot run on a {tuple(images.shape)} batch: {first_line(error)}"
            ) from None
        if np.issubdtype(output.dtype, np.floating) and not np.isfinite(output).all():
            raise DataError(
                f"{self.path} outputs non-finite logits (NaN or inf); the model is broken (re-export it from a "
                "checkpoint that `atrous eval` accepts)"
            )
        return torch.from_numpy(np.ascontiguousarray(output))

    def __repr__(self) -> str:
        size = "dynamic" if self.input_size is None else f"{self.input_size[0]}×{self.input_size[1]}"
        return f"OnnxModel({str(self.path)!r}, input {size}, {'labels' if self.outputs_labels else 'logits'})"
