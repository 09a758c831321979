"""Export: ONNX (verified with ONNX Runtime, optional int8), torch.export programs, TorchScript.

>>> from atrous.export import export_onnx, OnnxModel
>>> report = export_onnx(model, "model.onnx", input_size=(512, 512))   # doctest: +SKIP
>>> report.max_abs_diff, report.argmax_agreement                        # doctest: +SKIP
"""

from atrous.export._common import ExportedModel, ExportError, ExportReport, prepare_for_export
from atrous.export.onnx import DEFAULT_OPSET, export_onnx
from atrous.export.runtime import OnnxModel
from atrous.export.torch_formats import export_program, export_torchscript, trace_program

__all__ = [
    "DEFAULT_OPSET",
    "ExportError",
    "ExportReport",
    "ExportedModel",
    "OnnxModel",
    "export_onnx",
    "export_program",
    "export_torchscript",
    "prepare_for_export",
    "trace_program",
]
