"""Int8 ONNX models: ONNX Runtime static quantisation (QDQ, per-channel weights).

Activations are calibrated (min/max) on real images from a folder, pre-processed as
the model expects (resized to the calibration size, normalised with the model's
mean/std). Weights are int8 per output channel, activations uint8 per tensor.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import nn

from atrous.errors import ConfigError, DataError
from atrous.exporters._common import (
    ExportError,
    ExportReport,
    atomic_output,
    calibration_images,
    check_output_path,
    quiet_loggers,
)
from atrous.exporters.runtime import OnnxModel
from atrous.labels import class_labels

__all__ = ["CALIBRATION_METHODS", "QuantizeReport", "export_onnx_int8", "quantize_int8"]

# How activation ranges are read off the calibration images: min/max (fast, outliers
# stretch the range), a 99.999th percentile, or the KL-divergence (entropy) threshold.
CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "percentile": CalibrationMethod.Percentile,
    "entropy": CalibrationMethod.Entropy,
}

logger = logging.getLogger(__name__)


@dataclass
class QuantizeReport:
    """Result of :func:`quantize_int8`: where it went, on how many images it was calibrated,
    and the fraction of pixels whose label matches the float model on those images."""

    path: Path
    calibration_images: int
    argmax_agreement: float


class _Reader(CalibrationDataReader):
    """Yields one {input name: (1, 3, H, W) batch} at a time to the calibrator."""

    def __init__(self, input_name: str, batches: list[np.ndarray]) -> None:
        self.input_name = input_name
        self.iterator = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.iterator, None)
        return None if batch is None else {self.input_name: batch}


def quantize_int8(
    float_model: str | Path,
    path: str | Path,
    calibration: list[np.ndarray],
    *,
    min_agreement: float = 0.9,
    method: str = "minmax",
    argmax: bool = False,
) -> QuantizeReport:
    """Quantise the float ONNX file ``float_model`` to int8 at ``path`` (atomic write).

    ``calibration``: normalised float32 (1, 3, H, W) arrays (see :func:`calibration_batches`).
    ``method``: one of ``CALIBRATION_METHODS``. ``argmax``: end the int8 graph in an
    ArgMax over classes, so it outputs labels (N, H, W) — ONNX Runtime then never hands
    the full-resolution logits back (at 513×513 × 21 classes that halves the time after
    the network). The int8 model's labels are compared
    with the float model's on the calibration images; below ``min_agreement`` →
    ``ExportError`` and no file.
    """
    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"unknown calibration method {method!r}; valid: {', '.join(CALIBRATION_METHODS)}")
    path = check_output_path(path, suffix=".onnx")
    if not calibration:
        raise DataError("no calibration images; give a folder of images with --calibrate")
    reference = OnnxModel(float_model)
    if reference.outputs_labels:
        raise ConfigError("int8 quantisation needs a logits model; export without --argmax")
    reader = _Reader(reference.input_name, calibration)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}.prep.") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        with quiet_loggers("onnxruntime"):
            quant_pre_process(str(float_model), str(prepared), skip_symbolic_shape=False)
        with atomic_output(path, ".onnx") as temp, quiet_loggers("onnxruntime"):
            with contextlib.redirect_stdout(io.StringIO()):  # the entropy and percentile calibrators print()
                quantize_static(
                    str(prepared),
                    str(temp),
                    reader,
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CALIBRATION_METHODS[method],
                )
            _copy_metadata(float_model, temp, int8=True)
            if argmax:
                _append_argmax(temp)
            agreement = _agreement(reference, OnnxModel(temp), calibration)
            if not agreement >= min_agreement:
                raise ExportError(
                    f"int8 labels agree with the float model on {agreement:.2%} of calibration pixels "
                    f"(need ≥ {min_agreement:.0%}) with {method} calibration; {path} was not written"
                    + ("" if method == "percentile" else "; try --calibration-method percentile")
                )
    logger.debug("wrote %s (int8; labels agree with float on %.2f%% of calibration pixels)", path, agreement * 100)
    return QuantizeReport(path, len(calibration), agreement)


def export_onnx_int8(
    model: nn.Module,
    path: str | Path,
    *,
    input_size: tuple[int, int],
    calibration: str | Path | Sequence[Any],
    method: str = "minmax",
    limit: int = 32,
    argmax: bool = False,
    dynamic: bool = False,
    opset: int | None = None,
) -> ExportReport:
    """Export ``model`` to a float ONNX graph (verified against PyTorch, kept in a temp
    folder beside ``path``), then :func:`quantize_int8` it onto ``path`` with activation
    ranges read (``method``) on ``calibration``: a folder (up to ``limit`` of its
    images, normalised as ``model`` expects) or normalised (1, 3, H, W) arrays.

    The report compares the int8 labels with the float graph's on the calibration
    images; ``float_report`` is the float graph's check against PyTorch.
    """
    from atrous.exporters.onnx import DEFAULT_OPSET, export_onnx

    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"unknown calibration method {method!r}; valid: {', '.join(CALIBRATION_METHODS)}")
    path = check_output_path(path, suffix=".onnx")
    size = (int(input_size[0]), int(input_size[1]))
    batches = calibration_images(model, calibration, size, limit=limit)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}.float.") as scratch:
        float_path = Path(scratch) / "float.onnx"
        float_report = export_onnx(model, float_path, input_size=size, dynamic=dynamic, opset=opset or DEFAULT_OPSET)
        result = quantize_int8(float_path, path, batches, method=method, argmax=argmax)
    return ExportReport(
        path,
        None,
        None,
        result.argmax_agreement,
        [size],
        kind=f"int8 (QDQ, per-channel) calibrated ({method}) on {result.calibration_images} images",
        reference="the float model",
        runtime="ONNX Runtime",
        float_report=float_report,
    )


def _agreement(reference: OnnxModel, quantized: OnnxModel, batches: list[np.ndarray]) -> float:
    same = total = 0
    for batch in batches:
        image = torch.from_numpy(batch)
        expected, got = class_labels(reference(image)), quantized(image)
        got = got if quantized.outputs_labels else class_labels(got)
        same += int((expected == got).sum())
        total += expected.numel()
    return same / total


def _append_argmax(path: Path) -> None:
    """End the graph at ``path`` in ArgMax over axis 1: logits (N, K, H, W) → labels (N, H, W) int64."""
    import json

    import onnx
    from onnx import TensorProto, helper

    from atrous.exporters.runtime import METADATA_PREFIX

    proto = onnx.load(str(path))
    logits = proto.graph.output[0]
    proto.graph.node.append(helper.make_node("ArgMax", [logits.name], ["labels"], axis=1, keepdims=0))
    dims = [d.dim_param or d.dim_value for d in logits.type.tensor_type.shape.dim]
    del proto.graph.output[:]
    proto.graph.output.append(helper.make_tensor_value_info("labels", TensorProto.INT64, [dims[0], *dims[2:]]))
    for entry in proto.metadata_props:
        if entry.key == f"{METADATA_PREFIX}argmax":
            entry.value = json.dumps(True)
    onnx.save(proto, str(path))


def _copy_metadata(source: str | Path, target: Path, *, int8: bool) -> None:
    import json

    import onnx

    from atrous.exporters.runtime import METADATA_PREFIX

    props = onnx.load(str(source), load_external_data=False).metadata_props
    proto = onnx.load(str(target))
    existing = {entry.key for entry in proto.metadata_props}
    for entry in props:
        if entry.key not in existing:
            proto.metadata_props.add(key=entry.key, value=entry.value)
    if f"{METADATA_PREFIX}int8" not in existing:
        proto.metadata_props.add(key=f"{METADATA_PREFIX}int8", value=json.dumps(int8))
    onnx.save(proto, str(target))
