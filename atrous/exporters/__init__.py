"""Export: ONNX (verified with ONNX Runtime, optional int8), TFLite (verified with LiteRT, optional
int8), torch.export programs, TorchScript.

>>> from atrous.exporters import export_onnx, OnnxModel
>>> report = export_onnx(model, "model.onnx", input_size=(512, 512))   # doctest: +SKIP
>>> report.max_abs_diff, report.argmax_agreement                        # doctest: +SKIP
"""

from atrous.exporters._common import ExportedModel, ExportError, ExportReport, calibration_batches, prepare_for_export
from atrous.exporters.onnx import DEFAULT_OPSET, export_onnx
from atrous.exporters.runtime import OnnxModel
from atrous.exporters.tflite import export_tflite
from atrous.exporters.tflite_runtime import TfliteModel
from atrous.exporters.torch_formats import export_program, export_torchscript, trace_program

__all__ = [
    "DEFAULT_OPSET",
    "ExportError",
    "ExportReport",
    "ExportedModel",
    "OnnxModel",
    "TfliteModel",
    "calibration_batches",
    "export_onnx",
    "export_program",
    "export_tflite",
    "export_torchscript",
    "prepare_for_export",
    "trace_program",
]
