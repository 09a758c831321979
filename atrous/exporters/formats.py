"""The export format registry and :func:`export`, the one call that writes any format.

A format is a name, a file suffix, a one-line summary and a writer
``writer(model, path, *, input_size, argmax, **options) -> ExportReport`` that folds,
converts, verifies against PyTorch and only then keeps the file. The built-in writers
live one per file in this package and are named here as ``"module:function"``, so
listing the formats (``atrous export --format`` choices) imports neither torch nor a
converter; another package registers its own with :func:`register_format`.

>>> import atrous
>>> report = atrous.export("camvid", "camvid.onnx", input_size=(360, 480))   # doctest: +SKIP
>>> report.argmax_agreement                                                  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atrous.errors import ConfigError, choices_message
from atrous.limits import check_flags

if TYPE_CHECKING:  # pragma: no cover
    from atrous.exporters._common import ExportReport

__all__ = [
    "DEFAULT_INPUT_SIZE",
    "ExportFormat",
    "export",
    "export_formats",
    "format_for_path",
    "get_format",
    "register_format",
]

DEFAULT_INPUT_SIZE = (512, 512)


@dataclass(frozen=True)
class ExportFormat:
    """One export format: ``writer`` is a callable or a ``"module:function"`` imported on first use."""

    name: str
    suffix: str
    summary: str
    writer: Callable[..., ExportReport] | str

    def load(self) -> Callable[..., ExportReport]:
        """The writer function (importing its module if it is named by a string)."""
        if callable(self.writer):
            return self.writer
        module, _, function = self.writer.partition(":")
        return getattr(importlib.import_module(module), function)

    def options(self) -> list[str]:
        """The format options its writer takes besides ``model``, ``path``, ``input_size`` and ``argmax``."""
        parameters = inspect.signature(self.load()).parameters.values()
        return [p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.name not in ("input_size", "argmax")]


_FORMATS: dict[str, ExportFormat] = {}


def register_format(name: str, *, suffix: str, summary: str, writer: Callable[..., ExportReport] | str) -> ExportFormat:
    """Register an export format: files ending in ``suffix`` written by ``writer`` (see the module docstring)."""
    if name in _FORMATS:
        raise ValueError(f"export format {name!r} is registered twice")
    if not suffix.startswith(".") or suffix != suffix.lower():
        raise ValueError(f"suffix of export format {name!r} must be lower case and start with '.', got {suffix!r}")
    taken = [f.name for f in _FORMATS.values() if f.suffix == suffix]
    if taken:
        raise ValueError(f"suffix {suffix} is already the suffix of export format {taken[0]!r}")
    _FORMATS[name] = ExportFormat(name, suffix, summary, writer)
    return _FORMATS[name]


def export_formats() -> dict[str, ExportFormat]:
    """Every registered format by name, in registration order."""
    return dict(_FORMATS)


def get_format(name: str) -> ExportFormat:
    """The format registered as ``name`` (``ConfigError`` listing the valid ones otherwise)."""
    if name not in _FORMATS:
        raise ConfigError(choices_message("export format", name, list(_FORMATS)))
    return _FORMATS[name]


def format_for_path(path: str | Path) -> ExportFormat:
    """The format whose suffix ``path`` ends in (``ConfigError`` listing the suffixes otherwise)."""
    suffix = Path(path).suffix.lower()
    for fmt in _FORMATS.values():
        if fmt.suffix == suffix:
            return fmt
    known = ", ".join(f"{f.suffix} ({f.name})" for f in _FORMATS.values())
    raise ConfigError(f"cannot tell the export format of {path} from its suffix; use one of {known}, or pass format=")


def export(
    model: Any,
    path: str | Path,
    *,
    format: str | None = None,
    input_size: Sequence[int] | None = None,
    argmax: bool = False,
    overwrite: bool = False,
    **options: Any,
) -> ExportReport:
    """Write ``model`` to ``path`` in ``format`` and verify the file against PyTorch; returns its report.

    Args:
        model: an ``nn.Module`` (N, 3, H, W) → (N, K, H, W) logits, the object
            :func:`atrous.open` returns for a checkpoint, or a checkpoint path or shipped
            model name (opened on the CPU).
        path: the file to write; its folder is created if missing. Nothing is left there
            if the export or its check fails.
        format: a registered format (:func:`export_formats`: ``onnx``, ``tflite``,
            ``pt2``, ``torchscript``); default: the one ``path``'s suffix names.
        input_size: (H, W) of the graph (with ``dynamic``, of the sample verified);
            default the training crop or converted graph's size the checkpoint records,
            else 512 × 512.
        argmax: the graph outputs labels (N, H, W) instead of logits.
        overwrite: replace an existing file at ``path`` (never one of the export's inputs:
            the checkpoint, the calibration or check images).
        **options: the format's own options, e.g. ``dynamic=True``, ``opset=18``,
            ``int8=True, calibration="photos/"`` (onnx); ``int8=True,
            calibration="photos/"``, ``check_images=...`` (tflite). An option the
            format does not take is a ``ConfigError`` naming the ones it does.
    Returns:
        The writer's ``ExportReport`` (max |logit difference|, label agreement, sizes checked).
    """
    check_flags(argmax=argmax, overwrite=overwrite, **{k: v for k, v in options.items() if k in ("dynamic", "int8")})
    fmt = get_format(format) if format is not None else format_for_path(path)
    path = Path(path)
    if path.suffix.lower() != fmt.suffix:
        raise ConfigError(f"{path}: {fmt.name} exports end in {fmt.suffix}")
    valid = fmt.options()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"export format {fmt.name} takes no option {', '.join(unknown)}; valid: {', '.join(valid) or 'none'}"
        )
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give a file name such as {path / ('model' + fmt.suffix)}")
    _check_not_replacing(path, model, options, overwrite=overwrite)
    module, suggested = _as_module(model)
    size = _input_size(input_size if input_size is not None else suggested or DEFAULT_INPUT_SIZE)
    path.parent.mkdir(parents=True, exist_ok=True)
    return fmt.load()(module, path, input_size=size, argmax=bool(argmax), **options)


def _check_not_replacing(path: Path, model: Any, options: dict[str, Any], *, overwrite: bool) -> None:
    """Refuse ``path`` if it is one of the export's inputs, or exists and ``overwrite`` is False."""
    from atrous.files import check_not_input
    from atrous.opening import OpenedModel

    source = model.path if isinstance(model, OpenedModel) else model if isinstance(model, (str, Path)) else None
    inputs = [source, options.get("calibration"), options.get("check_images")]
    check_not_input(path, [item for item in inputs if isinstance(item, (str, Path))], "path")
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} exists; pass overwrite=True to replace it, or choose another path")


def _as_module(model: Any) -> tuple[Any, tuple[int, int] | None]:
    """(the nn.Module to export, the input size its file suggests) from whatever ``export`` was given."""
    from torch import nn

    from atrous.opening import OpenedModel, open

    if isinstance(model, (str, Path)):
        model = open(model)
    if isinstance(model, OpenedModel):
        if not isinstance(model.model, nn.Module):
            raise ConfigError(
                f"{model.path} is already an exported {model.format} graph; export from the atrous checkpoint (.pt)"
            )
        return model.model.eval(), model.suggested_size()
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"export takes an nn.Module, atrous.open's result or a checkpoint path; got {type(model).__name__}"
        )
    return model, None


def _input_size(size: Sequence[int]) -> tuple[int, int]:
    values = tuple(size)
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ConfigError(f"input_size must be two positive ints (H, W); got {size!r}")
    return int(values[0]), int(values[1])


register_format(
    "onnx",
    suffix=".onnx",
    writer="atrous.exporters.onnx:write_onnx",
    summary="ONNX for ONNX Runtime: float or static int8, a fixed or dynamic input size",
)
register_format(
    "tflite",
    suffix=".tflite",
    writer="atrous.exporters.tflite:write_tflite",
    summary="TensorFlow Lite for LiteRT: float or int8, a fixed input size",
)
register_format(
    "pt2",
    suffix=".pt2",
    writer="atrous.exporters.torch_formats:export_program",
    summary="a torch.export program: a fixed or dynamic input size",
)
register_format(
    "torchscript",
    suffix=".pt",
    writer="atrous.exporters.torch_formats:export_torchscript",
    summary="TorchScript traced by torch.jit.trace, following the input size of each call",
)
