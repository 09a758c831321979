"""PyTorch-native deployment formats: TorchScript (``torch.jit.trace``) and ``torch.export``.

Both trace the BN-folded model (:func:`atrous.exporters._common.prepare_for_export`) on a
sample input, save to a temp file, load it back, compare with the eager model and
only then rename it into place. ``torch.export`` programs can keep H, W dynamic;
traced TorchScript follows the input size of every call (sizes are recorded as ops).
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atrous.deeplab import min_input_size
from atrous.errors import first_line
from atrous.exporters._common import (
    ExportError,
    ExportReport,
    atomic_output,
    check_output_path,
    prepare_for_export,
    verify,
)
from atrous.nn.fake_quant import has_activation_quant

__all__ = ["export_program", "export_torchscript", "trace_program"]

logger = logging.getLogger(__name__)


def trace_program(module: nn.Module, example: torch.Tensor, *, dynamic: bool = False, min_size: int = 32) -> Any:
    """``torch.export.export`` of ``module`` on ``example`` (N ≥ 2), batch and optionally H, W dynamic."""
    shapes: dict[int, Any] = {0: torch.export.Dim("batch", min=1, max=1024)}
    if dynamic:
        low = max(2, min_size)
        shapes[2] = torch.export.Dim("height", min=low, max=8192)
        shapes[3] = torch.export.Dim("width", min=low, max=8192)
    try:
        return torch.export.export(module, (example,), dynamic_shapes=(shapes,), strict=False)
    except Exception as error:
        raise ExportError(f"torch.export failed: {first_line(error)}") from error


def _min_size(model: nn.Module) -> int:
    return min_input_size(model, default=32)


def export_program(
    model: nn.Module,
    path: str | Path,
    *,
    input_size: tuple[int, int] = (512, 512),
    dynamic: bool = False,
    argmax: bool = False,
) -> ExportReport:
    """Save ``model`` as a ``torch.export`` program (``.pt2``), verified after loading it back."""
    path = check_output_path(path, suffix=".pt2")
    module = prepare_for_export(model, input_size, argmax=argmax)
    program = trace_program(module, torch.zeros(2, 3, *input_size), dynamic=dynamic, min_size=_min_size(model))
    sizes = [tuple(input_size)] + ([(input_size[0] + 13, input_size[1] + 7)] if dynamic else [])
    with atomic_output(path, ".pt2") as temp:
        buffer = io.BytesIO()  # serialised in memory: a write error is a Python error, never a C++ abort
        torch.export.save(program, buffer)
        temp.write_bytes(buffer.getvalue())
        loaded = torch.export.load(str(temp)).module()
        report = verify(module, loaded, sizes, path, rounded_activations=has_activation_quant(model))
    logger.debug("wrote %s (max |logit diff| vs eager %s)", path, report.max_abs_diff)
    report.kind, report.runtime = "torch.export program" + (" (dynamic H, W)" if dynamic else ""), "torch.export.load"
    return report


def export_torchscript(
    model: nn.Module, path: str | Path, *, input_size: tuple[int, int] = (512, 512), argmax: bool = False
) -> ExportReport:
    """Save ``model`` traced with ``torch.jit.trace`` (``.pt``), verified after loading it back
    at the traced size and at another size."""
    path = check_output_path(path, suffix=".pt")
    module = prepare_for_export(model, input_size, argmax=argmax)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape arithmetic, and TorchScript's deprecation
        traced = torch.jit.trace(module, torch.zeros(1, 3, *input_size), check_trace=False)
    sizes = [tuple(input_size), (input_size[0] + 13, input_size[1] + 7)]
    with atomic_output(path, ".pt") as temp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jit.save / jit.load deprecation notes
        buffer = io.BytesIO()  # serialised in memory: a full disk must not abort in C++ mid-file
        torch.jit.save(traced, buffer)
        temp.write_bytes(buffer.getvalue())
        loaded = torch.jit.load(str(temp))
        report = verify(module, loaded, sizes, path, rounded_activations=has_activation_quant(model))
    logger.debug("wrote %s (max |logit diff| vs eager %s)", path, report.max_abs_diff)
    report.kind, report.runtime = "TorchScript", "torch.jit.load"
    return report
