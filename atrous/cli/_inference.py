"""Options and loading shared by ``atrous eval`` and ``atrous predict``.

A model source is an atrous checkpoint (``atrous.load_model``), or a file written by
``atrous export``: ONNX (run with ONNX Runtime through ``OnnxModel``) or TFLite (run
with LiteRT through ``TfliteModel``).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from atrous.cli._options import non_negative_int, positive_int
from atrous.class_map import ResolvedClassMap
from atrous.data.io import DEFAULT_MAX_PIXELS
from atrous.errors import ConfigError
from atrous.inference import Predictor

logger = logging.getLogger(__name__)

EVAL_SCALES = "0.5,0.75,1.0,1.25,1.5,1.75"


def parse_scales(text: str) -> tuple[float, ...]:
    """'0.5,1,1.5' → (0.5, 1.0, 1.5); ``ConfigError`` for anything else."""
    try:
        scales = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--scales takes comma-separated numbers such as {EVAL_SCALES}; got {text!r}") from None
    if not scales or any(not s > 0 for s in scales):
        raise ConfigError(f"--scales must be positive numbers such as {EVAL_SCALES}; got {text!r}")
    return scales


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--checkpoint, --device, --output-stride."""
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="PATH",
        help="atrous checkpoint (.pt), or a model from `atrous export`: ONNX (.onnx) or TFLite (.tflite)",
    )
    parser.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto; ONNX and TFLite models run on CPU)"
    )
    parser.add_argument(
        "--output-stride",
        type=int,
        choices=(8, 16, 32),
        help="run the same weights at another output stride (e.g. trained at 16, evaluated at 8)",
    )


def add_predictor_options(parser: argparse.ArgumentParser, *, default_scales: str) -> None:
    """--scales, --flip, --input-size, --sliding-window, --crf, --batch-size, --workers, --no-fast, --precision, --max-pixels."""
    parser.add_argument(
        "--scales",
        default=default_scales,
        metavar="S1,S2,...",
        help=f"input scales averaged (default {default_scales})",
    )
    parser.add_argument("--flip", action="store_true", help="also average the horizontally flipped input")
    parser.add_argument(
        "--input-size",
        type=positive_int,
        nargs=2,
        metavar=("H", "W"),
        help="run the model on each image resized to H×W and resize its scores back "
        "(e.g. 513 513 for a graph exported at that size); not with --scales",
    )
    parser.add_argument(
        "--sliding-window",
        type=positive_int,
        metavar="CROP",
        help="run each scale in overlapping CROP×CROP windows (large images)",
    )
    parser.add_argument(
        "--crf", action="store_true", help="refine the probabilities with a dense CRF (atrous.crf.DenseCRF)"
    )
    parser.add_argument(
        "--crf-params",
        metavar="JSON|K=V,...",
        help=(
            "CRF parameters: the JSON written by `atrous crf-tune --out`, or key=value pairs such as "
            "bilateral_compat=4,bilateral_sxy=50,bilateral_srgb=3,iterations=10 (implies --crf; "
            "default: DeepLab's w1=10, σα=80, σβ=13, w2=3, σγ=3, 5 iterations)"
        ),
    )
    parser.add_argument("--batch-size", type=positive_int, default=1, metavar="B", help="images per forward pass (default 1)")
    parser.add_argument(
        "--workers", type=non_negative_int, default=2, metavar="N", help="image-reading worker processes (default 2)"
    )
    parser.add_argument(
        "--no-fast", dest="fast", action="store_false", help="run the model as saved (no BN folding / channels_last)"
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="bf16: a bfloat16 copy of the model (fast on CPUs with AMX/AVX-512 BF16 and recent GPUs; "
        "PyTorch checkpoints only; default fp32)",
    )
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        metavar="N",
        help=f"refuse larger images, before decoding them (default {DEFAULT_MAX_PIXELS:,}: inference within a few GB)",
    )


@dataclass(frozen=True)
class ModelSource:
    """A model named by ``--checkpoint``, the training config its checkpoint stores ({} for
    an exported graph) and where an imported model came from (its ``source`` entry), read
    from the file once."""

    model: Any
    train_config: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, Any] = field(default_factory=dict)

    def suggested_size(self) -> tuple[int, int] | None:
        """(H, W) of the training crop or of the graph the model was converted from, if stored."""
        crop = self.train_config.get("crop_size") or self.origin.get("input_size")
        if isinstance(crop, int):
            return crop, crop
        if isinstance(crop, (list, tuple)) and len(crop) == 2 and all(isinstance(v, int) for v in crop):
            return int(crop[0]), int(crop[1])
        return None


def open_model_source(path: str, device: torch.device, output_stride: int | None) -> ModelSource:
    """The model in ``path`` (an nn.Module from a checkpoint, an ``OnnxModel`` for ``.onnx``
    or a ``TfliteModel`` for ``.tflite``), at ``output_stride`` unless None, with its
    training config."""
    suffix = Path(path).suffix.lower()
    if suffix in (".onnx", ".tflite"):
        from atrous.exporters import OnnxModel, TfliteModel

        if output_stride is not None:
            raise ConfigError(f"--output-stride needs a checkpoint: an exported {suffix} graph is fixed at its export stride")
        return ModelSource(OnnxModel(path) if suffix == ".onnx" else TfliteModel(path))
    from atrous.checkpoint import model_from_checkpoint, read_checkpoint

    checkpoint = read_checkpoint(path, map_location=device)
    model = model_from_checkpoint(checkpoint, path, map_location=device)
    if output_stride is not None and output_stride != model.output_stride:
        from atrous.models import with_output_stride

        logger.info(
            "running %s at output stride %d (trained at %d)", model.config["name"], output_stride, model.output_stride
        )
        model = with_output_stride(model, output_stride)
    return ModelSource(model, dict(checkpoint.get("train_config") or {}), dict(checkpoint.get("source") or {}))


def dataset_for_model(args: argparse.Namespace, source: ModelSource, *, check_classes: bool = True) -> Any:
    """The ``args.split`` split of ``--dataset``/``--data`` as ``source``'s model sees it.

    With neither option, the dataset the checkpoint was trained on, with that run's dataset
    options (e.g. the synthetic image size). A folder dataset without a classes file takes
    the model's class count (its masks need not show every class). With ``check_classes``,
    a dataset of another class count is one ``ConfigError`` before the model runs.
    """
    from atrous.data import build_dataset, dataset_options, detect_layout
    from atrous.data.palette import find_class_file

    config, model = source.train_config, source.model
    name, root = args.dataset, args.data
    if name is None and root is None:
        name, root = config.get("dataset"), config.get("data")
    options: dict[str, Any] = {}
    if config.get("dataset") == name and (args.data is None or args.data == config.get("data")):
        options.update({k: v for k, v in (config.get("dataset_options") or {}).items() if k != "num_images"})
    model_classes = getattr(model, "num_classes", None)
    if root is not None and model_classes is not None and find_class_file(root) is None:
        if "num_classes" in dataset_options(name or detect_layout(root)):  # a folder dataset's
            options["num_classes"] = int(model_classes)
    if getattr(args, "max_pixels", None) is not None:
        options["max_pixels"] = args.max_pixels
    dataset = build_dataset(name, root, args.split, **options)
    if check_classes and model_classes is not None and int(model_classes) != dataset.num_classes:
        raise ConfigError(
            f"{args.checkpoint} predicts {model_classes} classes but the dataset has {dataset.num_classes} "
            f"({', '.join(dataset.class_names)}); use the dataset the model was trained for"
        )
    return dataset


def parse_crf_params(text: str | None) -> dict[str, Any]:
    """``--crf-params``: a crf-tune JSON file (its ``params``) or ``key=value,...`` → DenseCRF kwargs."""
    if not text:
        return {}
    path = Path(text)
    if text.lower().endswith(".json") or path.is_file():
        try:
            payload = json.loads(path.read_text())
        except OSError as error:
            raise ConfigError(f"cannot read --crf-params {path}: {error.strerror}") from None
        except json.JSONDecodeError as error:
            raise ConfigError(f"--crf-params {path} is not valid JSON: {error}") from None
        values = payload.get("params", payload) if isinstance(payload, dict) else None
        if not isinstance(values, dict):
            raise ConfigError(f"--crf-params {path} must hold an object of CRF parameters (or crf-tune's output)")
    else:
        values = {}
        for item in text.split(","):
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"--crf-params expects key=value pairs or a .json file, got {item!r}")
            try:
                values[key.strip()] = float(value)
            except ValueError:
                raise ConfigError(f"--crf-params: {key.strip()} must be a number, got {value!r}") from None
    from atrous.crf.dense_crf import KERNEL_DEFAULTS

    unknown = sorted(set(values) - set(KERNEL_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown CRF parameter(s) {', '.join(unknown)}; valid: {', '.join(KERNEL_DEFAULTS)}")
    params = {key: float(value) for key, value in values.items()}
    if "iterations" in params:
        if params["iterations"] != int(params["iterations"]):
            raise ConfigError(f"iterations must be a whole number, got {params['iterations']}")
        params["iterations"] = int(params["iterations"])
    return params


def crf_settings(args: argparse.Namespace) -> dict[str, Any] | None:
    """The CRF parameters ``--crf`` / ``--crf-params`` ask for ({} = DeepLab's defaults), or None: no CRF."""
    params = parse_crf_params(args.crf_params)
    return params if args.crf or args.crf_params else None


def make_crf(device: torch.device, params: dict[str, Any] | None = None) -> torch.nn.Module:
    """The dense CRF with ``params`` (default: DeepLab's kernel parameters), on ``device``."""
    from atrous.crf import DenseCRF

    return DenseCRF(**(params or {})).to(device)


def build_predictor(
    model: Any,
    args: argparse.Namespace,
    device: torch.device,
    *,
    crf: dict[str, Any] | None,
    class_map: ResolvedClassMap | None = None,
) -> Predictor:
    """The Predictor the options describe, refining with a dense CRF of parameters ``crf``
    unless None, its classes merged by ``class_map`` unless None."""
    crf = make_crf(device, crf) if crf is not None else None
    input_size = args.input_size
    if input_size is None and args.sliding_window is None and getattr(model, "resize_to_fit", False):
        input_size = model.input_size  # a TFLite graph, like TF's own, segments any photo at its size
    return Predictor(
        model,
        device=device if isinstance(model, torch.nn.Module) else "cpu",
        scales=parse_scales(args.scales),
        flip=args.flip,
        crop_size=args.sliding_window,
        crf=crf,
        fast=args.fast,
        batch_size=args.batch_size,
        input_size=input_size,
        class_map=class_map,
        precision=args.precision,
    )


def max_pixels(args: argparse.Namespace) -> int:
    """The image size limit ``--max-pixels`` sets (default ``DEFAULT_MAX_PIXELS``)."""
    return args.max_pixels or DEFAULT_MAX_PIXELS
