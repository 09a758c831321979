"""Options shared by ``atrous eval``, ``predict`` and ``crf-tune``, and the calls they make
with them: ``atrous.open`` (a checkpoint, shipped name, ``.onnx`` or ``.tflite``) and
its ``predictor``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from atrous.cli._options import non_negative_int, positive_int
from atrous.errors import ConfigError
from atrous.strides import OUTPUT_STRIDES

logger = logging.getLogger(__name__)

EVAL_SCALES = "0.5,0.75,1.0,1.25,1.5,1.75"


def parse_scales(text: str) -> tuple[float, ...]:
    """'0.5,1,1.5' → (0.5, 1.0, 1.5); ``ConfigError`` for anything else."""
    from atrous.limits import parse_numbers

    scales = parse_numbers(text, "--scales", EVAL_SCALES)
    if any(not s > 0 for s in scales):
        raise ConfigError(f"--scales must be positive numbers such as {EVAL_SCALES}; got {text!r}")
    return scales


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--checkpoint, --device, --output-stride."""
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="PATH|NAME",
        help="atrous checkpoint (.pt) or shipped model name (atrous list --weights), or a model from "
        "`atrous export`: ONNX (.onnx) or TFLite (.tflite); a tuned CRF beside it (<stem>.crf.json) is used by --crf",
    )
    parser.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto; ONNX and TFLite models run on CPU)"
    )
    parser.add_argument(
        "--output-stride",
        type=int,
        choices=OUTPUT_STRIDES,
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
        "--crf",
        action="store_true",
        help="refine the probabilities with a dense CRF (atrous.crf.DenseCRF): the parameters in <checkpoint stem>"
        ".crf.json beside the model if there is one, else DeepLab's; not for a model exported with --argmax",
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
    parser.add_argument(
        "--batch-size", type=positive_int, default=1, metavar="B", help="images per forward pass (default 1)"
    )
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
        help="refuse larger images, before decoding them (default 25,000,000: inference within a few GB)",
    )


def check_dataset_option(args: argparse.Namespace) -> None:
    """``ConfigError`` listing the registered layouts for an unknown ``--dataset``, before any work."""
    from atrous.data import DATASETS
    from atrous.errors import choices_message

    if args.dataset is not None and args.dataset not in DATASETS:
        raise ConfigError(choices_message("--dataset", args.dataset, list(DATASETS)))


def add_dataset_options(parser: argparse.ArgumentParser, *, what: str) -> None:
    """``--data``, ``--dataset``, ``--split`` and the mask options (``--ignore-index``,
    ``--label-map``) of a command that scores a model on a dataset; ``what``: "evaluate"."""
    parser.add_argument("--data", metavar="DIR", help="dataset root (not needed for --dataset shapes)")
    parser.add_argument(
        "--dataset",
        metavar="NAME",
        help="dataset layout, e.g. camvid, cityscapes, voc, folder, shapes (an unknown name lists them all; "
        "default: detected from --data; with neither, the dataset the checkpoint was trained on)",
    )
    parser.add_argument("--split", default="val", help=f"split to {what} (default val)")
    parser.add_argument(
        "--ignore-index",
        type=int,
        metavar="V",
        help="mask value of unlabelled pixels, e.g. 11 for masks in CamVid's style (default: the training run's, else 255)",
    )
    parser.add_argument(
        "--label-map",
        metavar="FILE|a:b,...",
        help="rename mask values before scoring, e.g. 11:255 (default: the training run's), as `atrous train --label-map`",
    )


def dataset_for_model(args: argparse.Namespace, source: Any, *, check_classes: bool = True) -> Any:
    """The ``args.split`` split of ``--dataset``/``--data`` as ``source``'s model sees it
    (``source``: ``atrous.open``'s result).

    With neither option, the dataset the checkpoint was trained on. On the run's own data,
    the run's dataset and mask options (e.g. the synthetic image size, ``--ignore-index``)
    apply unless given again. A folder dataset without a classes file takes the model's
    class count (its masks need not show every class). With ``check_classes``, a dataset
    of another class count is one ``ConfigError`` before the model runs.
    """
    from atrous.data import build_dataset
    from atrous.data.detect import classes_counted_from_masks, run_dataset_options
    from atrous.shipped import record_for_file

    check_dataset_option(args)
    config, model = source.train_config, source.model
    name, root = args.dataset, args.data
    if name is None and root is None:
        shipped = record_for_file(source.path) if source.format == "checkpoint" else None
        if shipped is not None:
            raise ConfigError(
                f"give --data DIR: the folder to score the shipped model {shipped.name!r} on "
                f"(it was trained on {shipped.training_data})"
            )
        name, root = config.get("dataset"), config.get("data")
        if root is not None and not Path(root).exists():
            raise ConfigError(f"{args.checkpoint} was trained on {root}, which is not here; give --data DIR")
    options: dict[str, Any] = {}
    if config.get("dataset") == name and (args.data is None or _same_folder(args.data, config.get("data"))):
        options.update({k: v for k, v in run_dataset_options(config).items() if k != "num_images"})
    for option in ("ignore_index", "label_map"):
        if getattr(args, option, None) is not None:
            options[option] = getattr(args, option)
    model_classes = getattr(model, "num_classes", None)
    if root is not None and model_classes is not None and classes_counted_from_masks(name, root):
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


def _same_folder(given: str | Path, stored: str | Path | None) -> bool:
    """Whether ``given`` names the folder a run stored (as given then, or absolute)."""
    if stored is None:
        return False
    try:
        return Path(given).resolve() == Path(stored).resolve()
    except OSError:  # a link loop: not the run's folder
        return False


def open_model(args: argparse.Namespace) -> tuple[Any, dict[str, Any] | None]:
    """(``atrous.open`` of ``--checkpoint`` at ``--device`` / ``--output-stride``, the CRF
    parameters ``--crf`` / ``--crf-params`` ask for or None: no CRF).

    ``--crf-params`` is read before the model is opened; ``--crf`` alone takes the
    parameters tuned for the model (its ``<stem>.crf.json``) if it has them, else
    DeepLab's defaults ({}). A CRF for a model that outputs labels is refused here, in
    one line, before any work.
    """
    from atrous.crf.params import parse_crf_params
    from atrous.inference.predictor import check_refinable
    from atrous.opening import open

    explicit = parse_crf_params(args.crf_params) if args.crf_params else None
    opened = open(args.checkpoint, device=args.device, output_stride=args.output_stride)
    if explicit is None and not args.crf:
        if opened.crf_problem is not None:
            logger.warning("ignored, as no CRF was asked for: %s", opened.crf_problem)
        return opened, None
    check_refinable(opened.model)
    if explicit is not None:
        return opened, explicit
    if opened.crf_problem is not None:
        from atrous.opening import CRF_FILE_REMEDY

        raise ConfigError(f"{opened.crf_problem}; {CRF_FILE_REMEDY}")
    if opened.crf_params is not None:
        logger.info("dense CRF with the parameters tuned for this model (%s)", opened.crf_file)
        return opened, dict(opened.crf_params)
    return opened, {}


def build_predictor(opened: Any, args: argparse.Namespace, *, crf: dict[str, Any] | None, class_map: Any = None) -> Any:
    """The Predictor the options describe for ``opened`` (``atrous.open``'s result),
    refining with a dense CRF of parameters ``crf`` unless None, its classes merged by
    ``class_map`` unless None."""
    return opened.predictor(
        crf=crf if crf is not None else False,
        scales=parse_scales(args.scales),
        flip=args.flip,
        crop_size=args.sliding_window,
        fast=args.fast,
        batch_size=args.batch_size,
        input_size=args.input_size,
        class_map=class_map,
        precision=args.precision,
        max_pixels=getattr(args, "max_pixels", None),
    )


def max_pixels(args: argparse.Namespace) -> int:
    """The image size limit ``--max-pixels`` sets (default ``DEFAULT_MAX_PIXELS``)."""
    from atrous.data.io import DEFAULT_MAX_PIXELS

    return args.max_pixels or DEFAULT_MAX_PIXELS
