"""``atrous export``: ONNX or TFLite (optionally int8), torch.export or TorchScript, verified before it is written.

Every export folds BatchNorm into the convolutions, runs the exported file on a sample
input (ONNX Runtime, LiteRT) and compares it with PyTorch (max |logit difference| and
label agreement are printed); a failed check exits non-zero and leaves no file.
TFLite export needs the optional extra: pip install 'atrous[tflite]'.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from atrous.cli._options import output_path, positive_int
from atrous.errors import CheckpointError, ConfigError
from atrous.strides import OUTPUT_STRIDES

logger = logging.getLogger(__name__)

# Command-line flags that set a format option of atrous.export, by option name.
FORMAT_FLAGS = {
    "dynamic": "--dynamic",
    "opset": "--opset",
    "int8": "--int8",
    "calibration": "--calibrate",
    "calibration_method": "--calibration-method",
    "calibration_count": "--calibrate-count",
    "check_images": "--check-images",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    from atrous.exporters.formats import export_formats

    formats = export_formats()
    parser = subparsers.add_parser(
        "export",
        help="export a model to ONNX or TFLite (int8 optional), torch.export or TorchScript",
        description=__doc__.split("\n\n", 1)[1].strip().replace("``", ""),
        epilog=(
            "Formats: " + "; ".join(f"{f.name} ({f.suffix}): {f.summary}" for f in formats.values()) + ". "
            "Examples: atrous export --checkpoint camvid --out camvid.onnx --dynamic; "
            "atrous export --checkpoint best.pt --out model-int8.onnx --size 360 480 --int8 --calibrate photos/; "
            "atrous export --checkpoint best.pt --format tflite --int8 --calibration photos/ --argmax --out model.tflite "
            "(calibrate on images like those the model will see, e.g. the val images of your own dataset)"
        ),
    )
    source = parser.add_argument_group(
        "model (a checkpoint or shipped name, or a registered name for untrained weights)"
    )
    source.add_argument("--checkpoint", metavar="PATH|NAME", help="atrous checkpoint or shipped model name to export")
    source.add_argument("--model", metavar="NAME", help="registered model name (untrained weights unless --checkpoint)")
    source.add_argument("--num-classes", type=positive_int, metavar="K", help="classes of --model (default 21)")
    source.add_argument("--output-stride", type=int, choices=OUTPUT_STRIDES, help="export at this output stride")
    parser.add_argument(
        "--format", choices=list(formats), help="output format (default: the one --out's suffix names, else onnx)"
    )
    parser.add_argument(
        "--out",
        type=output_path,
        required=True,
        metavar="PATH",
        help=f"output file ({', '.join(f.suffix for f in formats.values())}); its folder is created if missing",
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
        "--int8",
        action="store_true",
        help="static int8 quantisation (onnx: ONNX Runtime QDQ, per-channel weights; tflite: ai-edge-quantizer, int8 in)",
    )
    parser.add_argument(
        "--calibrate", "--calibration", dest="calibrate", metavar="DIR", help="folder of images calibrating --int8"
    )
    parser.add_argument(
        "--calibration-method",
        choices=("minmax", "percentile", "entropy"),
        help="how --int8 reads activation ranges for onnx: min/max, 99.999th percentile or entropy (default minmax; "
        "tflite: min/max only)",
    )
    parser.add_argument(
        "--calibrate-count", type=positive_int, metavar="N", help="calibration images used (default 32)"
    )
    parser.add_argument(
        "--check-images",
        metavar="DIR",
        help="tflite float: verify on these images instead of random ones (needed for a strict check of a model "
        "converted from a TF graph, whose activations are rounded to uint8 grids)",
    )
    parser.set_defaults(func=run)


def _format_name(args: argparse.Namespace) -> str:
    """--format, else the format --out's suffix names, else onnx."""
    from atrous.exporters.formats import export_formats

    if args.format:
        return args.format
    suffix = Path(args.out).suffix.lower()
    return next((f.name for f in export_formats().values() if f.suffix == suffix), "onnx")


def flag_format_options(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """The format options the flags set, each checked against what format ``name`` takes
    (``ConfigError`` naming the flag and the formats that take it)."""
    from atrous.exporters.formats import export_formats, get_format

    given = {
        "dynamic": args.dynamic or None,
        "opset": args.opset,
        "int8": args.int8 or None,
        "calibration": args.calibrate,
        "calibration_method": args.calibration_method,
        "calibration_count": args.calibrate_count,
        "check_images": args.check_images,
    }
    given = {key: value for key, value in given.items() if value is not None}
    if args.int8 and not args.calibrate:
        raise ConfigError("--int8 needs --calibrate DIR: a folder of images like those the model will see")
    if args.calibrate and not args.int8:
        raise ConfigError("--calibrate is only used with --int8")
    if args.check_images and args.int8:
        raise ConfigError(
            "--check-images verifies a float export (int8 is checked on its calibration images); drop one"
        )
    if args.opset is not None:
        from atrous.exporters.onnx import opset_range

        low, high = opset_range()
        if not low <= args.opset <= high:
            raise ConfigError(f"--opset {args.opset} is not supported; valid: {low}..{high} (default {low})")
    fmt = get_format(name)
    takes = set(fmt.options())
    for key in given:
        if key not in takes:
            flag = FORMAT_FLAGS[key]
            others = [f.name for f in export_formats().values() if key in f.options()]
            raise ConfigError(
                f"{flag} applies to --format {' or '.join(others)} only ({fmt.name}: {fmt.summary}); drop {flag}"
            )
    return given


def load_export_model(args: argparse.Namespace) -> Any:
    """What --checkpoint / --model / --num-classes / --output-stride name: ``atrous.open``'s
    result for a checkpoint, else an untrained model of --model."""
    if args.checkpoint:
        from atrous.opening import open

        if Path(args.checkpoint).suffix.lower() in (".onnx", ".tflite"):
            raise ConfigError(
                f"{args.checkpoint} is already an exported graph; export from the atrous checkpoint (.pt)"
            )
        opened = open(args.checkpoint, output_stride=args.output_stride)
        config = opened.model.config
        if args.model and args.model != config["name"]:
            raise CheckpointError(
                f"checkpoint {args.checkpoint} holds {config['name']}, not {args.model}; drop --model or pick the matching checkpoint"
            )
        if args.num_classes and args.num_classes != config["num_classes"]:
            raise CheckpointError(
                f"checkpoint {args.checkpoint} has {config['num_classes']} classes, not {args.num_classes}; drop --num-classes"
            )
        return opened
    if not args.model:
        raise ConfigError("give --checkpoint PATH|NAME, or --model NAME (--num-classes K) for untrained weights")
    from atrous.models import create_model

    logger.warning("exporting %s with untrained weights (no --checkpoint)", args.model)
    return create_model(args.model, num_classes=args.num_classes or 21, output_stride=args.output_stride).eval()


def _check_min_size(size: list[int] | None, model: Any) -> None:
    """``ConfigError`` for a ``--size`` below the smallest input the model runs on."""
    from atrous.deeplab import min_input_size

    if size is None:
        return
    smallest = min_input_size(getattr(model, "model", model))
    if min(size) < smallest:
        raise ConfigError(f"--size {size[0]} {size[1]} is below this model's smallest input; use --size ≥ {smallest}")


def run(args: argparse.Namespace) -> int:
    from atrous.exporters.formats import export, get_format
    from atrous.files import check_output_file

    name = _format_name(args)
    fmt = get_format(name)
    if Path(args.out).suffix.lower() != fmt.suffix:
        raise ConfigError(f"--out {args.out}: {name} exports end in {fmt.suffix}")
    options = flag_format_options(args, name)
    out = check_output_file(
        args.out,
        "--out",
        force=args.force,
        inputs=[args.checkpoint, args.calibrate, args.check_images],
        create_parent=True,
    )
    if args.size is not None:
        from atrous.data.io import DEFAULT_MAX_PIXELS
        from atrous.limits import check_view_pixels

        check_view_pixels("--size", *args.size, DEFAULT_MAX_PIXELS)
    model = load_export_model(args)
    _check_min_size(args.size, model)
    report = export(model, out, format=name, input_size=args.size, argmax=args.argmax, overwrite=args.force, **options)
    if report.float_report is not None:
        print(f"float model: {report.float_report.describe()}")
    print(f"wrote {out}: {report.describe()}")
    return 0
