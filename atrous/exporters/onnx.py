"""ONNX export with ONNX Runtime verification, written atomically.

``export_onnx`` folds BatchNorm into the convolutions, exports with the
``torch.export``-based exporter (image pooling is a mean over H, W, so no adaptive
pooling reaches the graph), optionally puts the argmax inside the graph, stores class
names / palette / normalisation as metadata, then runs the file in ONNX Runtime on
sample inputs and compares with PyTorch. The file appears at its path only after
verification passes; on failure nothing is left behind and ``ExportError`` says by
how much it failed.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atrous.deeplab import min_input_size
from atrous.errors import ConfigError, first_line
from atrous.exporters._common import (
    EXPORT_ATOL,
    ExportError,
    ExportReport,
    atomic_output,
    check_output_path,
    prepare_for_export,
    quiet_loggers,
    verify,
)
from atrous.exporters.runtime import METADATA_PREFIX, OnnxModel
from atrous.nn.fake_quant import has_activation_quant

__all__ = ["DEFAULT_OPSET", "export_onnx", "model_metadata", "write_onnx"]

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 18


def opset_range() -> tuple[int, int]:
    """The ONNX opsets ``export_onnx`` writes: from ``DEFAULT_OPSET`` (the torch.export-based
    exporter's oldest) to the newest the installed ``onnx`` knows."""
    import onnx

    return DEFAULT_OPSET, int(onnx.defs.onnx_opset_version())


def model_metadata(
    model: nn.Module, *, argmax: bool, input_size: tuple[int, int] | None, transforms: Sequence[str] = ()
) -> dict[str, Any]:
    """The ``atrous.*`` metadata stored in an exported file (JSON-serialisable values);
    ``transforms``: names of the inference transforms applied to the exported copy."""
    config = dict(getattr(model, "config", None) or {})
    return {
        "config": config,
        "num_classes": config.get(
            "num_classes", getattr(model, "num_classes", None)
        ),  # a hand-built DeepLab has no config
        "class_names": list(getattr(model, "class_names", None) or []),
        "palette": [list(c) for c in getattr(model, "palette", None) or []],
        "mean": list(getattr(model, "mean", None) or ()),
        "std": list(getattr(model, "std", None) or ()),
        "min_input_size": min_input_size(model),
        "argmax": argmax,
        "input_size": list(input_size) if input_size else None,
        "transforms": list(transforms),
    }


def _write_metadata(path: Path, metadata: dict[str, Any], opset: int) -> None:
    """Store ``metadata`` in the file; ``ExportError`` if the exporter wrote another opset."""
    import onnx

    proto = onnx.load(str(path))
    written = next((entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), None)
    if written != opset:
        raise ExportError(f"the ONNX exporter wrote opset {written} instead of {opset}; choose another --opset")
    for key, value in metadata.items():
        proto.metadata_props.add(key=METADATA_PREFIX + key, value=json.dumps(value))
    onnx.save(proto, str(path))


def _to_onnx(module: nn.Module, example: torch.Tensor, path: Path, *, dynamic: bool, opset: int, min_size: int) -> None:
    shapes: dict[int, Any] = {0: torch.export.Dim("batch", min=1, max=1024)}
    if dynamic:
        low = max(2, min_size)
        shapes[2] = torch.export.Dim("height", min=low, max=8192)
        shapes[3] = torch.export.Dim("width", min=low, max=8192)
    output = "labels" if getattr(module, "argmax", False) else "logits"
    try:
        # The exporter prints progress lines and deprecation notes; keep the CLI output clean.
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            quiet_loggers("onnxscript", "onnx_ir"),
        ):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=True,
                opset_version=opset,
                input_names=["image"],
                output_names=[output],
                dynamic_shapes=(shapes,),
                external_data=False,
                verbose=False,
            )
    except Exception as error:
        raise ExportError(f"ONNX export failed: {first_line(error)}") from error


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    input_size: tuple[int, int] = (512, 512),
    dynamic: bool = False,
    opset: int = DEFAULT_OPSET,
    argmax: bool = False,
    atol: float = EXPORT_ATOL,
    min_agreement: float = 0.9999,
) -> ExportReport:
    """Export ``model`` ((N, 3, H, W) → (N, K, H, W) logits) to ONNX at ``path`` and verify it.

    ``input_size``: (H, W) of the static graph, or of the sample input when ``dynamic``
    (then any H, W ≥ the backbone's minimum is accepted). The batch dimension is always
    dynamic. Verification runs ONNX Runtime and PyTorch on random inputs (``input_size``,
    plus an odd size when ``dynamic``); see :func:`atrous.exporters._common.verify` for the
    tolerance. The model's ``class_names``, ``palette``, ``mean``, ``std`` and ``config``
    are stored in the file's metadata (read back by :class:`atrous.exporters.OnnxModel`).
    """
    path = check_output_path(path, suffix=".onnx")
    low, high = opset_range()
    if not low <= opset <= high:
        raise ConfigError(f"ONNX opset {opset} is not supported; valid: {low}..{high}")
    height, width = (int(v) for v in input_size)
    module = prepare_for_export(model, (height, width), argmax=argmax)
    metadata = model_metadata(
        model, argmax=argmax, input_size=None if dynamic else (height, width), transforms=module.transforms
    )
    sizes = [(height, width)] + ([(height + 13, width + 7)] if dynamic else [])
    with atomic_output(path, ".onnx") as temp:
        # Batch 2: torch.export would specialise a size-1 batch dimension to a constant.
        _to_onnx(
            module,
            torch.zeros(2, 3, height, width),
            temp,
            dynamic=dynamic,
            opset=opset,
            min_size=metadata["min_input_size"],
        )
        _write_metadata(temp, metadata, opset)
        report = verify(
            module,
            OnnxModel(temp),
            sizes,
            path,
            atol=atol,
            min_agreement=min_agreement,
            rounded_activations=has_activation_quant(model),
        )
    logger.debug(
        "wrote %s (max |logit diff| vs PyTorch %s, argmax agreement %.4f%%)",
        path,
        "n/a (labels)" if report.max_abs_diff is None else f"{report.max_abs_diff:.2e}",
        report.argmax_agreement * 100,
    )
    report.kind, report.runtime = "float32 ONNX", "ONNX Runtime"
    return report


def write_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    input_size: tuple[int, int],
    argmax: bool = False,
    dynamic: bool = False,
    opset: int = DEFAULT_OPSET,
    int8: bool = False,
    calibration: str | Path | Sequence[Any] | None = None,
    calibration_method: str = "minmax",
    calibration_count: int = 32,
) -> ExportReport:
    """The ``onnx`` format of :func:`atrous.export`: :func:`export_onnx`, or with ``int8``
    the float graph quantised by ONNX Runtime (:func:`atrous.exporters.quantize.export_onnx_int8`)
    on ``calibration`` (a folder of images, or normalised (1, 3, H, W) arrays; up to
    ``calibration_count`` of a folder's images) read with ``calibration_method``."""
    low, high = opset_range()
    if not low <= opset <= high:
        raise ConfigError(f"ONNX opset {opset} is not supported; valid: {low}..{high} (default {DEFAULT_OPSET})")
    if not int8:
        if calibration is not None:
            raise ConfigError("calibration images are only used with int8=True")
        return export_onnx(model, path, input_size=input_size, dynamic=dynamic, opset=opset, argmax=argmax)
    from atrous.exporters.quantize import export_onnx_int8

    if calibration is None:
        raise ConfigError("int8 needs calibration images: a folder of images like those the model will see")
    return export_onnx_int8(
        model,
        path,
        input_size=input_size,
        calibration=calibration,
        method=calibration_method,
        limit=calibration_count,
        argmax=argmax,
        dynamic=dynamic,
        opset=opset,
    )
