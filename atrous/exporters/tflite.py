"""TFLite export (float or int8) through Google's ``litert-torch``, verified by LiteRT.

The exported graph takes one NHWC image (1, H, W, 3), normalised with the model's
mean/std, at the fixed size it was exported for, and gives logits (1, K, H, W) or, with
``argmax``, labels (1, H, W). An int8 graph is quantised statically by Google's
ai-edge-quantizer (int8 weights and activations, ranges observed by running the float
graph on calibration images) and has int8 input (its scale and zero point in the
file), int8 logits or int32 labels out. atrous stores
its metadata (class names, palette, mean, std, config) as the file's ``atrous``
metadata entry, read back by :class:`atrous.exporters.TfliteModel`.

Every file is run by the LiteRT interpreter before it is kept: a float graph must give
PyTorch's labels on ≥ 99.9 % of pixels, an int8 graph on ≥ 98 % of the calibration
images' pixels; otherwise nothing is written. (A model with an imported graph's uint8
activation grids: see ``check_images`` of :func:`export_tflite`.)

``litert-torch`` is an optional extra (``pip install 'atrous[tflite]'``), imported only here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atrous.errors import ConfigError, first_line
from atrous.exporters._common import (
    CALIBRATION_OPTION,
    CHECK_IMAGES_OPTION,
    ExportedModel,
    ExportError,
    ExportReport,
    atomic_output,
    calibration_images,
    check_output_path,
    prepare_for_export,
    verify,
)
from atrous.exporters.onnx import model_metadata
from atrous.exporters.tflite_runtime import METADATA_NAME, TfliteModel, litert_schema, silenced_output
from atrous.labels import class_labels
from atrous.nn.fake_quant import has_activation_quant

__all__ = ["INSTALL_HINT", "export_tflite", "write_tflite"]

INSTALL_HINT = "pip install 'atrous[tflite]'"
FLOAT_AGREEMENT = 0.999
# XNNPACK sums in other orders than PyTorch: on a random 101-layer ResNet 6.5e-3 on logits up
# to 13 (5e-4 relative). Labels are the real check; the logits bound catches a broken graph.
FLOAT_ATOL = 1e-2
ROUNDED_AGREEMENT = 0.95
RANDOM_ROUNDED_AGREEMENT = 0.80
INT8_AGREEMENT = 0.98


def _litert_torch() -> Any:
    try:
        with silenced_output():  # its import prints absl, oneDNN and torch.compile notices
            import litert_torch
    except ImportError:
        raise ConfigError(f"TFLite export needs Google's litert-torch converter: {INSTALL_HINT}") from None
    return litert_torch


class _ChannelsLastInput(nn.Module):
    """(N, H, W, 3) → the exported model's output: mobile apps hand over HWC bitmaps."""

    def __init__(self, model: ExportedModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image.permute(0, 3, 1, 2).contiguous())  # NCHW strides: the graph traced as exported to ONNX


def export_tflite(
    model: nn.Module,
    path: str | Path,
    *,
    input_size: tuple[int, int] = (512, 512),
    argmax: bool = False,
    calibration: Sequence[torch.Tensor] | None = None,
    check_images: Sequence[torch.Tensor] | None = None,
    min_agreement: float | None = None,
) -> ExportReport:
    """Export ``model`` to a TFLite file at ``path`` and verify it with the LiteRT interpreter.

    Args:
        model: (N, 3, H, W) normalised images → (N, K, H, W) logits.
        input_size: (H, W) of the static graph.
        argmax: output labels (1, H, W) instead of logits.
        calibration: normalised (1, 3, H, W) images at ``input_size``; given, the graph
            is quantised to int8 with activation ranges observed on them (ai-edge-quantizer),
            and verified on them.
        check_images: normalised (1, 3, H, W) images a float graph is verified on
            instead of random ones. A model that rounds activations to uint8 grids (an
            imported TF graph) needs them for a strict check: on random images its labels
            sit on rounding edges (LiteRT divides by a grid step as a multiplication),
            so there only ≥ 80 % equal labels and a mean logit difference within 5 % of
            the largest logit are required.
        min_agreement: label agreement with PyTorch required (default 99.9 % float,
            95 % float with rounded activations on ``check_images``, 98 % int8).
    Returns:
        The ``ExportReport`` (for int8: label agreement on the calibration images).
    Raises:
        ExportError: conversion failed or the file disagrees with PyTorch (nothing written).
    """
    path = check_output_path(path, suffix=".tflite")
    litert_torch = _litert_torch()
    height, width = (int(v) for v in input_size)
    frames = _checked(calibration, height, width, "calibration") if calibration is not None else None
    checks = _checked(check_images, height, width) if check_images is not None and frames is None else None
    rounded = has_activation_quant(model)
    dropped: tuple[str, ...] = ()
    if frames is not None and rounded:
        from atrous.models import with_options

        # int8 puts every activation on its own grid; the float grids' rounding ops (divide,
        # round, clamp) would stay float between quantised ops and cost 4× the speed.
        model = with_options(model, activation_quant=None)
        dropped = ("drop_activation_grids",)  # as the registered transform of that name does, config included
    module = prepare_for_export(model, (height, width), argmax=argmax)
    sample = (frames[0] if frames else torch.zeros(1, 3, height, width)).permute(0, 2, 3, 1).contiguous()
    graph = _ChannelsLastInput(module).eval()
    try:
        with silenced_output():
            flatbuffer = litert_torch.convert(graph, (sample,)).model_content()
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - the converter raises many types; one clear line
        raise ExportError(
            f"litert-torch could not convert the model ({first_line(error)}); {path} was not written"
        ) from None
    metadata = model_metadata(model, argmax=argmax, input_size=(height, width), transforms=dropped + module.transforms)
    metadata["int8"] = frames is not None
    flatbuffer = with_metadata(flatbuffer, metadata)
    if frames:  # after the metadata: the quantiser keeps it, and its output's buffers sit past the flatbuffer
        try:
            with silenced_output():
                flatbuffer = _quantize_int8(flatbuffer, frames)
        except ExportError:
            raise
        except Exception as error:  # noqa: BLE001 - the quantiser raises many types; one clear line
            raise ExportError(
                f"ai-edge-quantizer could not quantise the model ({first_line(error)}); {path} was not written"
            ) from None
    with atomic_output(path, ".tflite") as temp:
        temp.write_bytes(flatbuffer)
        try:
            candidate = TfliteModel(temp)
        except Exception as error:  # noqa: BLE001 - the interpreter refuses the file (e.g. an unsupported op)
            raise ExportError(f"LiteRT cannot run the converted model ({error}); {path} was not written") from None
        if checks is not None:
            bar = (ROUNDED_AGREEMENT if rounded else FLOAT_AGREEMENT) if min_agreement is None else min_agreement
            report = _verify_on(module, candidate, checks, path, bar, kind="float")
        elif frames is None:
            bar = (RANDOM_ROUNDED_AGREEMENT if rounded else FLOAT_AGREEMENT) if min_agreement is None else min_agreement
            report = verify(
                module,
                candidate,
                [(height, width)],
                path,
                min_agreement=bar,
                atol=FLOAT_ATOL,
                rounded_activations=rounded,
            )
        else:
            report = _verify_on(
                module, candidate, frames, path, INT8_AGREEMENT if min_agreement is None else min_agreement, kind="int8"
            )
    report.path = path
    report.runtime = "LiteRT"
    if frames is None:
        report.kind = "float32 TFLite"
    else:
        report.kind = f"int8 TFLite (int8 weights and activations, int8 input), calibrated on {len(frames)} images"
    return report


def write_tflite(
    model: nn.Module,
    path: str | Path,
    *,
    input_size: tuple[int, int],
    argmax: bool = False,
    int8: bool = False,
    calibration: str | Path | Sequence[Any] | None = None,
    calibration_count: int = 32,
    check_images: str | Path | Sequence[Any] | None = None,
) -> ExportReport:
    """The ``tflite`` format of :func:`atrous.export`: :func:`export_tflite`, with
    ``calibration`` and ``check_images`` also given as folders of images (up to
    ``calibration_count`` of each, normalised as ``model`` expects)."""
    if int8 and calibration is None:
        raise ConfigError("int8 needs calibration images: a folder of images like those the model will see")
    if calibration is not None and not int8:
        raise ConfigError("calibration images are only used with int8=True")
    if check_images is not None and int8:
        raise ConfigError("check_images applies to a float TFLite export (int8 is checked on its calibration images)")
    size = (int(input_size[0]), int(input_size[1]))

    def tensors(source: Any, option: str) -> list[torch.Tensor] | None:
        if source is None:
            return None
        arrays = calibration_images(model, source, size, limit=calibration_count, option=option)
        return [torch.from_numpy(a) for a in arrays]

    return export_tflite(
        model,
        path,
        input_size=size,
        argmax=argmax,
        calibration=tensors(calibration, CALIBRATION_OPTION),
        check_images=tensors(check_images, CHECK_IMAGES_OPTION),
    )


def _checked(images: Sequence[torch.Tensor], height: int, width: int, kind: str = "check") -> list[torch.Tensor]:
    frames = [image.detach().cpu().float() for image in images]
    if not frames:
        raise ConfigError(f"no {kind} images given")
    bad = [tuple(f.shape) for f in frames if tuple(f.shape) != (1, 3, height, width)]
    if bad:
        raise ConfigError(f"{kind} images must be (1, 3, {height}, {width}); got {bad[0]}")
    return frames


def _quantize_int8(flatbuffer: bytes, frames: Sequence[torch.Tensor]) -> bytes:
    """Static int8 quantisation of a float TFLite model by Google's ai-edge-quantizer
    (``static_wi8_ai8``: int8 weights and activations, ranges observed by running the float
    graph on ``frames``). Measured against litert-torch's PT2E flow on the official VOC
    model: 98.5 % vs 92 % of labels equal to the original graph (bench/tflite.py)."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    (input_name,) = Interpreter(model_content=flatbuffer).get_signature_list()["serving_default"]["inputs"]
    engine = quantizer.Quantizer(bytearray(flatbuffer))
    engine.load_quantization_recipe(recipe.static_wi8_ai8())
    samples = [{input_name: frame.permute(0, 2, 3, 1).contiguous().numpy()} for frame in frames]
    ranges = engine.calibrate({"serving_default": samples}, num_threads=max(1, torch.get_num_threads()))
    result = engine.quantize(ranges, enable_progress_report=False)
    if result.quantized_model is None:
        raise ExportError("ai-edge-quantizer returned no model")
    return bytes(result.quantized_model)


def _verify_on(
    reference: nn.Module,
    candidate: TfliteModel,
    frames: Sequence[torch.Tensor],
    path: Path,
    min_agreement: float,
    *,
    kind: str,
) -> ExportReport:
    """Label agreement of ``candidate`` with ``reference`` on real frames (calibration or check images)."""
    same = total = 0
    for frame in frames:
        with torch.inference_mode():
            expected, got = reference(frame), candidate(frame)
        expected_labels = expected if not expected.is_floating_point() else class_labels(expected)
        labels = got if not got.is_floating_point() else class_labels(got)
        same += int((labels == expected_labels).sum())
        total += expected_labels.numel()
    agreement = same / total
    if not agreement >= min_agreement:
        raise ExportError(
            f"the {kind} TFLite model's labels agree with PyTorch on {agreement:.2%} of the given images' "
            f"pixels (need ≥ {min_agreement:.1%}); {'calibrate on more or more typical images. ' if kind == 'int8' else ''}"
            f"{path} was not written"
        )
    size = tuple(frames[0].shape[-2:])
    return ExportReport(path, None, None, agreement, [size])


def with_metadata(flatbuffer: bytes, metadata: dict[str, Any]) -> bytes:
    """``flatbuffer`` (a TFLite model) with ``metadata`` as JSON in its ``atrous`` metadata entry."""
    import flatbuffers
    import numpy as np

    schema = litert_schema()
    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8)
    model.buffers = [*(model.buffers or []), buffer]
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name not in (METADATA_NAME, METADATA_NAME.encode())]
    model.metadata.append(entry)
    builder = flatbuffers.Builder(len(flatbuffer) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
