"""``atrous train``: train a model from a YAML recipe and/or command-line options.

Every flag sets the ``TrainConfig`` field of the same name (``--batch-size`` →
``batch_size``); the structured fields without a flag (``dataset_options``,
``model_options``, ``scale_range``, ``train_split``, ``val_split``) come from the recipe
or ``--set key=value``, which reaches any field. Under ``torchrun
--nproc_per_node N -m atrous train ...`` each process runs this and rank 0 reports.

``--pretrained`` with an atrous checkpoint (or a shipped model's name) fills the options
left unset with fine-tuning defaults (``atrous.engine.finetune``); ``--resume --out DIR``
alone takes every option from the run in DIR (``atrous.engine.resume``).
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from atrous.cli._options import output_path
from atrous.errors import ConfigError
from atrous.strides import OUTPUT_STRIDES

# (flag, field, argparse options, help) — one row per option.
_OPTIONS: tuple[tuple[str, str, dict[str, Any], str], ...] = (
    ("--data", "data", {"metavar": "DIR"}, "dataset root folder"),
    (
        "--dataset",
        "dataset",
        {"metavar": "NAME"},
        "dataset layout, e.g. folder (images/ + masks/) or camvid; an unknown name lists them all (default: detected from the folder)",
    ),
    (
        "--num-classes",
        "num_classes",
        {"type": int, "metavar": "K"},
        "classes of a folder dataset without classes.txt (default: found in the masks)",
    ),
    (
        "--ignore-index",
        "ignore_index",
        {"type": int, "metavar": "V"},
        "mask value of unlabelled pixels, e.g. 11 for masks in CamVid's style (default 255)",
    ),
    (
        "--label-map",
        "label_map",
        {"metavar": "FILE|a:b,..."},
        "rename mask values before training, e.g. 11:255,12:ignore, or a YAML/JSON file {11: 255} or a text file of value:class lines",
    ),
    (
        "--model",
        "model",
        {"metavar": "NAME"},
        "model name, e.g. deeplabv3plus_mobilenet_v2 (see `atrous list`); default: the --pretrained atrous checkpoint's model, else deeplabv3plus_mobilenet_v2",
    ),
    ("--epochs", "epochs", {"type": int, "metavar": "N"}, "training epochs (default 50)"),
    ("--batch-size", "batch_size", {"type": int, "metavar": "B"}, "images per batch and process (default 8)"),
    (
        "--crop-size",
        "crop_size",
        {"type": int, "nargs": "+", "metavar": "S"},
        "training crop in pixels: S (square) or H W (default 513)",
    ),
    (
        "--lr",
        "lr",
        {"type": float},
        "base learning rate (default 0.007; 0.0003 when fine-tuning an atrous --pretrained model)",
    ),
    (
        "--output-stride",
        "output_stride",
        {"type": int, "choices": OUTPUT_STRIDES},
        "output stride (default: the model's)",
    ),
    (
        "--out",
        "out",
        {"type": output_path, "metavar": "RUN_DIR"},
        "run folder for checkpoints and logs (default runs/train)",
    ),
    ("--seed", "seed", {"type": int}, "random seed; a CPU run with the same seed repeats bit for bit (default 0)"),
    ("--workers", "workers", {"type": int, "metavar": "N"}, "data-loading worker processes (default 4)"),
    (
        "--optimizer",
        "optimizer",
        {"metavar": "sgd|adamw"},
        "sgd (momentum 0.9, the papers) or adamw (default sgd; adamw when fine-tuning)",
    ),
    ("--momentum", "momentum", {"type": float}, "SGD momentum (default 0.9)"),
    ("--weight-decay", "weight_decay", {"type": float}, "weight decay on conv/linear weights (default 1e-4)"),
    ("--poly-power", "poly_power", {"type": float}, "power of the poly LR decay (default 0.9)"),
    ("--warmup-iters", "warmup_iters", {"type": int, "metavar": "N"}, "linear LR warmup iterations (default 0)"),
    ("--head-lr-mult", "head_lr_mult", {"type": float, "metavar": "X"}, "head LR = X × lr (default 1)"),
    (
        "--class-weights",
        "class_weights",
        {"metavar": "none|median-freq|enet|w0,w1,..."},
        "loss weight per class (default none)",
    ),
    (
        "--loss",
        "loss",
        {"metavar": "ce|bootstrap"},
        "cross-entropy, or bootstrap: only the hardest pixels count (default ce; bootstrap when fine-tuning)",
    ),
    (
        "--bootstrap-ratio",
        "bootstrap_ratio",
        {"type": float, "metavar": "R"},
        "fraction of pixels kept by --loss bootstrap (default 0.25)",
    ),
    (
        "--aux-loss-weight",
        "aux_loss_weight",
        {"type": float, "metavar": "WEIGHT"},
        "add an auxiliary head with this loss weight (default 0: none; the model option aux_loss=True is the head itself)",
    ),
    (
        "--amp",
        "amp",
        {"nargs": "?", "const": "fp16", "metavar": "off|fp16|bf16"},
        "mixed precision: fp16 (CUDA) or bf16 (default off)",
    ),
    (
        "--precision",
        "amp",
        {"type": lambda text: _amp_of_precision(text), "metavar": "fp32|bf16|fp16"},
        "the same as --amp, named as in eval/predict: bf16 autocast (fast on CPUs with AMX), fp16 (CUDA) or fp32 (default)",
    ),
    (
        "--no-channels-last",
        "channels_last",
        {"action": "store_false", "default": argparse.SUPPRESS},
        "train in NCHW instead of channels_last (NHWC) memory format",
    ),
    (
        "--ema",
        "ema",
        {"type": float, "metavar": "DECAY"},
        "validate and save a moving average of the weights, e.g. 0.998 per step (default 0: off)",
    ),
    ("--clip-grad", "clip_grad", {"type": float, "metavar": "NORM"}, "clip the gradient L2 norm (default 0: off)"),
    (
        "--freeze-bn",
        "freeze_bn",
        {"action": "store_true", "default": argparse.SUPPRESS},
        "keep BN statistics and affine parameters fixed (OS8 fine-tuning)",
    ),
    (
        "--no-sync-bn",
        "sync_bn",
        {"action": "store_false", "default": argparse.SUPPRESS},
        "per-process BN under DDP even on GPUs",
    ),
    ("--val-every", "val_every", {"type": int, "metavar": "N"}, "validate every N epochs, 0 = never (default 1)"),
    ("--val-batch-size", "val_batch_size", {"type": int, "metavar": "B"}, "validation batch size (default 1)"),
    ("--device", "device", {}, "auto, cpu, cuda or cuda:N (default auto)"),
    (
        "--max-iters",
        "max_iters",
        {"type": int, "metavar": "N"},
        "at most N iterations per epoch, for smoke tests (default 0: all)",
    ),
    (
        "--pretrained",
        "pretrained",
        {"metavar": "NAME|PATH"},
        "a shipped model (camvid, cityscapes, voc, …; see `atrous list --weights`) or an atrous checkpoint (.pt): every weight that fits, its model when --model is not given, and fine-tuning defaults for the options you leave unset (AdamW lr 0.0003, frozen BN, bootstrapped loss, EMA, whole-frame crops; printed at the start). Or ImageNet backbone weights: a torchvision file (.pth), a timm one (.pth or .safetensors), or 'imagenet' (the published file for --model's backbone, from torch.hub's cache; nothing is downloaded)",
    ),
    (
        "--pretrained-class-map",
        "pretrained_class_map",
        {"metavar": "NAME_OR_FILE"},
        "start each new class's classifier row from the --pretrained model's class mapped to it (a class map file or a shipped one, e.g. cityscapes_to_camvid)",
    ),
    (
        "--checkpoint-every",
        "checkpoint_every",
        {"type": int, "metavar": "N"},
        "also write last.pt every N iterations (default 500)",
    ),
    (
        "--resume",
        "resume",
        {"nargs": "?", "const": "last", "metavar": "CHECKPOINT"},
        "continue the run in --out with its own settings (default checkpoint: RUN_DIR/last.pt); options given again must agree, a larger --epochs extends the run",
    ),
    (
        "--overwrite",
        "overwrite",
        {"action": "store_true", "default": argparse.SUPPRESS},
        "start over in a folder that already holds a run",
    ),
    ("--no-progress", "progress", {"action": "store_false", "default": argparse.SUPPRESS}, "no progress bar"),
)


def _amp_of_precision(text: str) -> str:
    modes = {"fp32": "off", "bf16": "bf16", "fp16": "fp16"}
    if text not in modes:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(modes)}")
    return modes[text]


class _OneField(argparse.Action):
    """``store`` for a field that two flags set (``--amp``, ``--precision``): a second flag
    with another value is a usage error naming both, not a silent last-one-wins."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        given = vars(namespace).setdefault("_flags_given", {})
        earlier = given.get(self.dest)
        if earlier is not None and earlier[0] != option and earlier[1] != values:
            parser.error(
                f"{earlier[0]} {_as_given(earlier[1], earlier[0])} and {option} {_as_given(values, option)} "
                "contradict each other; give one of them"
            )
        given[self.dest] = (option, values)
        setattr(namespace, self.dest, values)


def _as_given(value: Any, option: str | None) -> str:
    """How a value reads on the command line of ``option`` (``--precision`` says fp32 for off)."""
    return "fp32" if option == "--precision" and value == "off" else str(value)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model",
        description=(
            "Train a DeepLab model. Options come from --config (YAML, keys = option names with "
            "underscores), then the flags below, then --set key=value."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "Examples:\n"
            "  atrous train --config shapes_deeplabv3plus_mobilenet_v2 --epochs 5 --out runs/demo\n"
            "  atrous train --pretrained camvid --data my_folder --out runs/mine      # fine-tune on images/ + masks/\n"
            "  atrous train --resume --out runs/mine                                  # continue it\n"
            "  atrous train --resume --out runs/mine --epochs 80                      # extend it"
        ),
    )
    parser.add_argument(
        "--config",
        metavar="NAME|YAML",
        help="training recipe: a shipped name (see `atrous list --configs`) or a YAML path",
    )
    shared = {name for _, name, _, _ in _OPTIONS if sum(row[1] == name for row in _OPTIONS) > 1}
    for flag, name, options, text in _OPTIONS:
        options = {"default": argparse.SUPPRESS, **options}
        if name in shared:
            options["action"] = _OneField
        parser.add_argument(flag, dest=name, help=text, **options)
    parser.add_argument(
        "--set",
        dest="set_items",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any config key, e.g. --set model_options.dropout=0 --set dataset_options.size=96",
    )
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> Any:
    """The ``TrainConfig`` described by the parsed command line."""
    from atrous.engine.config import make_config

    return make_config(values_from_args(args))


def values_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The options the command line sets (recipe, then flags, then ``--set``), as a dict."""
    from atrous.engine.config import load_config_file, parse_set_overrides

    values = load_config_file(args.config) if args.config else {}
    flags = {name: getattr(args, name) for _, name, _, _ in _OPTIONS if hasattr(args, name)}
    if "crop_size" in flags:
        crop = flags["crop_size"]
        if len(crop) > 2:
            raise ConfigError(f"--crop-size takes one size or a height and a width; got {' '.join(map(str, crop))}")
        flags["crop_size"] = crop[0] if len(crop) == 1 else list(crop)
    return {**values, **flags, **parse_set_overrides(args.set_items)}


def run(args: argparse.Namespace) -> int:
    from atrous.engine import train

    if int(os.environ.get("RANK", "0")) != 0:
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 reports for everyone
    result = train(values_from_args(args))
    if int(os.environ.get("RANK", "0")) == 0:
        best = f"{100 * result.best_miou:.2f}" if result.best_miou == result.best_miou else "—"
        print(
            f"trained {result.epochs} epochs ({result.iterations} iterations) in {result.seconds:.1f} s; best val mIoU {best}"
        )
        print(
            f"checkpoints: {result.last_checkpoint}" + (f", {result.best_checkpoint}" if result.best_checkpoint else "")
        )
    return 0
