"""``atrous export``: ONNX or TFLite (optionally int8), torch.export or TorchScript, verified before it is written.

Every export folds BatchNorm into the convolutions, runs the exported file on a sample
input (ONNX Runtime, LiteRT) and compares it with PyTorch (max |logit difference| and
label agreement are printed); a failed check exits non-zero and leaves no file.
TFLite export needs the optional extra: pip install 'atrous[tflite]'.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atrous.cli._inference import open_model_source
from atrous.cli._options import positive_int
from atrous.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

FORMATS = {"onnx": ".onnx", "pt2": ".pt2", "tflite": ".tflite", "torchscript": ".pt"}
QUANTISABLE = ("onnx", "tflite")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a model to ONNX or TFLite (int8 optional), torch.export or TorchScript",
        description=__doc__.split("\n\n", 1)[1].strip().replace("``", ""),
        epilog=(
            "Examples: atrous export --checkpoint best.pt --out model.onnx --dynamic; "
            "atrous export --checkpoint best.pt --out model-int8.onnx --size 360 480 --int8 --calibrate ../shared/data/camvid/val; "
            "atrous export --checkpoint best.pt --format tflite --int8 --calibration photos/ --argmax --out model.tflite"
        ),
    )
    source = parser.add_argument_group("model (a checkpoint, or a registered name for untrained weights)")
    source.add_argument("--checkpoint", metavar="PATH", help="atrous checkpoint to export")
    source.add_argument("--model", metavar="NAME", help="registered model name (untrained weights unless --checkpoint)")
    source.add_argument("--num-classes", type=positive_int, metavar="K", help="classes of --model (default 21)")
    source.add_argument("--output-stride", type=int, choices=(8, 16, 32), help="export at this output stride")
    parser.add_argument("--format", choices=sorted(FORMATS), default="onnx", help="output format (default onnx)")
    parser.add_argument(
        "--out", required=True, metavar="PATH", help="output file (.onnx, .tflite, .pt2 or .pt); its folder must exist"
    )
    parser.add_argument(
        "--size",
        type=positive_int,
        nargs=2,
        metavar=("H", "W"),
        help="input size; with --dynamic, the sample size verified (default: the checkpoint's training crop or "
        "converted graph's size, else 512 512)",
    )
    parser.add_argument(
        "--dynamic", action="store_true", help="accept any input size ≥ the backbone's minimum (onnx, pt2)"
    )
    parser.add_argument("--opset", type=int, metavar="N", help="ONNX opset, 18 or newer (default 18)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    parser.add_argument("--argmax", action="store_true", help="output labels (N, H, W) instead of logits")
    parser.add_argument(
        "--int8", action="store_true",
        help="static int8 quantisation (onnx: ONNX Runtime QDQ, per-channel weights; tflite: ai-edge-quantizer, int8 in)",
    )
    parser.add_argument("--calibrate", "--calibration", dest="calibrate", metavar="DIR", help="folder of images calibrating --int8")
    parser.add_argument(
        "--calibration-method",
        choices=("minmax", "percentile", "entropy"),
        default="minmax",
        help="how --int8 reads activation ranges for onnx: min/max, 99.999th percentile or entropy (default minmax; "
        "tflite: min/max)",
    )
    parser.add_argument(
        "--calibrate-count", type=positive_int, default=32, metavar="N", help="calibration images used (default 32)"
    )
    parser.add_argument(
        "--check-images", metavar="DIR",
        help="tflite float: verify on these images instead of random ones (needed for a strict check of a model "
        "converted from a TF graph, whose activations are rounded to uint8 grids)",
    )
    parser.set_defaults(func=run)


def load_export_model(args: argparse.Namespace) -> tuple[nn.Module, tuple[int, int] | None]:
    """The model named by --checkpoint / --model / --num-classes / --output-stride, and the
    input size its checkpoint suggests (the training crop, or a converted graph's size)."""
    from atrous.models import create_model

    if args.checkpoint:
        if Path(args.checkpoint).suffix.lower() in (".onnx", ".tflite"):
            raise ConfigError(f"{args.checkpoint} is already an exported graph; export from the atrous checkpoint (.pt)")
        source = open_model_source(args.checkpoint, torch.device("cpu"), args.output_stride)
        config = source.model.config
        if args.model and args.model != config["name"]:
            raise CheckpointError(
                f"checkpoint {args.checkpoint} holds {config['name']}, not {args.model}; drop --model or pick the matching checkpoint"
            )
        if args.num_classes and args.num_classes != config["num_classes"]:
            raise CheckpointError(
                f"checkpoint {args.checkpoint} has {config['num_classes']} classes, not {args.num_classes}; drop --num-classes"
            )
        return source.model.eval(), source.suggested_size()
    if not args.model:
        raise ConfigError("give --checkpoint PATH, or --model NAME (--num-classes K) for untrained weights")
    logger.warning("exporting %s with untrained weights (no --checkpoint)", args.model)
    return create_model(args.model, num_classes=args.num_classes or 21, output_stride=args.output_stride).eval(), None


def _check_options(args: argparse.Namespace) -> None:
    suffix = FORMATS[args.format]
    if Path(args.out).suffix.lower() != suffix:
        raise ConfigError(f"--out {args.out}: a {args.format} export should end in {suffix}")
    if args.opset and args.format != "onnx":
        raise ConfigError("--opset applies to --format onnx only")
    if args.int8 and args.format not in QUANTISABLE:
        raise ConfigError(f"--int8 applies to --format {' or '.join(QUANTISABLE)} only")
    if args.format == "tflite" and args.dynamic:
        raise ConfigError("a TFLite graph has a fixed input size: drop --dynamic and give --size H W")
    if args.opset is not None:
        from atrous.exporters.onnx import opset_range

        low, high = opset_range()
        if not low <= args.opset <= high:
            raise ConfigError(f"--opset {args.opset} is not supported; valid: {low}..{high} (default {low})")
    if args.format == "torchscript" and args.dynamic:
        raise ConfigError("TorchScript traces follow the input size already; drop --dynamic (or use --format pt2)")
    if args.int8 and not args.calibrate:
        raise ConfigError("--int8 needs --calibrate DIR: a folder of images like those the model will see")
    if args.calibrate and not args.int8:
        raise ConfigError("--calibrate is only used with --int8")
    if args.check_images and (args.format != "tflite" or args.int8):
        raise ConfigError("--check-images applies to float --format tflite (int8 is checked on its calibration images)")


def _describe(report: Any) -> str:
    sizes = ", ".join(f"{h}×{w}" for h, w in report.checked_sizes)
    if report.max_abs_diff is None:
        return f"labels agree with PyTorch on {report.argmax_agreement:.4%} of pixels at {sizes}"
    return (
        f"max |logit diff| vs PyTorch {report.max_abs_diff:.2e} (logits up to {report.max_abs_logit:.3g}), "
        f"argmax agreement {report.argmax_agreement:.4%} at {sizes}"
    )


def run(args: argparse.Namespace) -> int:
    from atrous.exporters import DEFAULT_OPSET, export_onnx, export_program, export_torchscript
    from atrous.files import check_output_file

    _check_options(args)
    out = check_output_file(args.out, "--out", force=args.force, inputs=[args.checkpoint, args.calibrate, args.check_images])
    model, suggested = load_export_model(args)
    size = tuple(args.size) if args.size else suggested or (512, 512)
    if args.format == "tflite":
        return _export_tflite(model, out, size, args)
    if args.format == "pt2":
        report = export_program(model, out, input_size=size, dynamic=args.dynamic, argmax=args.argmax)
    elif args.format == "torchscript":
        report = export_torchscript(model, out, input_size=size, argmax=args.argmax)
    elif not args.int8:
        report = export_onnx(
            model, out, input_size=size, dynamic=args.dynamic, opset=args.opset or DEFAULT_OPSET, argmax=args.argmax
        )
    else:
        return _export_int8(model, out, size, args)
    print(f"wrote {out}: {_describe(report)}")
    return 0


def _normalisation(model: nn.Module) -> tuple[Any, Any]:
    from atrous.data import IMAGENET_MEAN, IMAGENET_STD

    return getattr(model, "mean", None) or IMAGENET_MEAN, getattr(model, "std", None) or IMAGENET_STD


def _export_tflite(model: nn.Module, out: Path, size: tuple[int, int], args: argparse.Namespace) -> int:
    import torch

    from atrous.exporters import calibration_batches, export_tflite

    def images(folder: str | None) -> list[torch.Tensor] | None:
        if folder is None:
            return None
        batches = calibration_batches(folder, size, *_normalisation(model), limit=args.calibrate_count)
        return [torch.from_numpy(batch) for batch in batches]

    frames = images(args.calibrate if args.int8 else None)
    report = export_tflite(
        model, out, input_size=size, argmax=args.argmax, calibration=frames, check_images=images(args.check_images)
    )
    if frames is None:
        print(f"wrote {out}: float32 TFLite, {_describe(report)} (LiteRT)")
    else:
        print(
            f"wrote {out}: int8 TFLite (int8 weights and activations, int8 input), calibrated on {len(frames)} images; "
            f"labels agree with PyTorch on {report.argmax_agreement:.2%} of their pixels at {size[0]}×{size[1]} (LiteRT)"
        )
    return 0


def _export_int8(model: nn.Module, out: Path, size: tuple[int, int], args: argparse.Namespace) -> int:
    from atrous.exporters import DEFAULT_OPSET, calibration_batches, export_onnx
    from atrous.exporters.quantize import quantize_int8

    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.stem}.float.") as scratch:
        float_path = Path(scratch) / "float.onnx"
        report = export_onnx(
            model, float_path, input_size=size, dynamic=args.dynamic, opset=args.opset or DEFAULT_OPSET
        )
        print(f"float model: {_describe(report)}")
        batches = calibration_batches(args.calibrate, size, *_normalisation(model), limit=args.calibrate_count)
        result = quantize_int8(float_path, out, batches, method=args.calibration_method, argmax=args.argmax)
    print(
        f"wrote {out}: int8 (QDQ, per-channel) calibrated ({args.calibration_method}) on {result.calibration_images} images; "
        f"labels agree with the float model on {result.argmax_agreement:.2%} of their pixels"
    )
    return 0
