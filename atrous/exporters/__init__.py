"""Export: ONNX (verified with ONNX Runtime, optional int8), TFLite (verified with LiteRT, optional
int8), torch.export programs, TorchScript — one file per format behind the registry in
:mod:`atrous.exporters.formats`, which :func:`atrous.export` dispatches to.

>>> from atrous.exporters import export_onnx, OnnxModel
>>> report = export_onnx(model, "model.onnx", input_size=(512, 512))   # doctest: +SKIP
>>> report.max_abs_diff, report.argmax_agreement                        # doctest: +SKIP

The names below load on first use: listing the formats imports neither torch nor a converter.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "DEFAULT_OPSET",
    "ExportError",
    "ExportFormat",
    "ExportReport",
    "ExportedModel",
    "OnnxModel",
    "TfliteModel",
    "calibration_batches",
    "export_formats",
    "export_onnx",
    "export_program",
    "export_tflite",
    "export_torchscript",
    "prepare_for_export",
    "register_format",
    "trace_program",
]

_LAZY = {
    "DEFAULT_OPSET": "atrous.exporters.onnx",
    "ExportError": "atrous.exporters._common",
    "ExportFormat": "atrous.exporters.formats",
    "ExportReport": "atrous.exporters._common",
    "ExportedModel": "atrous.exporters._common",
    "OnnxModel": "atrous.exporters.runtime",
    "TfliteModel": "atrous.exporters.tflite_runtime",
    "calibration_batches": "atrous.exporters._common",
    "export_formats": "atrous.exporters.formats",
    "export_onnx": "atrous.exporters.onnx",
    "export_program": "atrous.exporters.torch_formats",
    "export_tflite": "atrous.exporters.tflite",
    "export_torchscript": "atrous.exporters.torch_formats",
    "prepare_for_export": "atrous.exporters._common",
    "register_format": "atrous.exporters.formats",
    "trace_program": "atrous.exporters.torch_formats",
}

if TYPE_CHECKING:  # pragma: no cover
    from atrous.exporters._common import (
        ExportedModel,
        ExportError,
        ExportReport,
        calibration_batches,
        prepare_for_export,
    )
    from atrous.exporters.formats import ExportFormat, export_formats, register_format
    from atrous.exporters.onnx import DEFAULT_OPSET, export_onnx
    from atrous.exporters.runtime import OnnxModel
    from atrous.exporters.tflite import export_tflite
    from atrous.exporters.tflite_runtime import TfliteModel
    from atrous.exporters.torch_formats import export_program, export_torchscript, trace_program


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'atrous.exporters' has no attribute {name!r}")
