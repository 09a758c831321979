"""``atrous convert``: turn another framework's trained DeepLab into an atrous checkpoint.

Reads the TensorFlow DeepLab authors' TFLite graphs (DeepLab v3 MobileNet v2, any
depth multiplier): weights are dequantised, folded batch norm mapped exactly, and the
graph's preprocessing, class names and palette stored, so the result works with
``atrous eval``, ``predict``, ``export``, ``Predictor`` and ``train --pretrained``.
A graph the importer cannot map fails with the first op or tensor it cannot place,
and nothing is written.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from atrous.cli._options import output_path
from atrous.errors import ConfigError

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="import a TF DeepLab model (.tflite) as an atrous checkpoint",
        description=__doc__.split("\n\n", 1)[1].strip().replace("``", ""),
        epilog="Example: atrous convert deeplabv3_mnv2_pascal_quant.tflite --out voc_deeplabv3_mobilenet_v2.pt",
    )
    parser.add_argument("source", metavar="SRC.tflite", help="TensorFlow Lite graph of a TF DeepLab model")
    parser.add_argument(
        "--out",
        required=True,
        type=output_path,
        metavar="DST.pt",
        help="checkpoint to write (its folder is created if missing)",
    )
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from atrous.checkpoint import save_checkpoint, weights_checkpoint
    from atrous.convert import convert_tflite
    from atrous.files import check_output_file

    source = Path(args.source)
    if Path(args.out).suffix.lower() != ".pt":
        raise ConfigError(
            f"--out {args.out}: convert writes an atrous checkpoint, so name it .pt (then `atrous export` it to "
            ".onnx or .tflite)"
        )
    out = check_output_file(args.out, "--out", force=args.force, inputs=[source], create_parent=True)
    model, metadata = convert_tflite(source)
    out.parent.mkdir(parents=True, exist_ok=True)  # made as train and predict make theirs
    save_checkpoint(weights_checkpoint(model, metadata), out)
    config = model.config
    logger.info(
        "wrote %s: %s with %d classes (width %s, output stride %d) from %s",
        out,
        config["name"],
        config["num_classes"],
        config["backbone_options"]["width_mult"],
        config["output_stride"],
        source.name,
    )
    return 0
