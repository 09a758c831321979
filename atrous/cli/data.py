"""``atrous data check DIR``: what a dataset folder holds and every problem in it, before a
training run would find them (``atrous.data.check``). Exit status 1 when problems were
found, 0 when none, 2 when the folder cannot be checked at all (no known layout)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from atrous.cli._options import positive_int
from atrous.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data",
        help="check a dataset folder (layout, pairs, classes, sizes, problems)",
        description="Work with dataset folders.",
    )
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    check = actions.add_parser(
        "check",
        help="print what a dataset folder holds and every problem in it, one line each",
        description=(
            "Read every image and mask of a dataset folder as training would and print: the layout detected, "
            "the images paired with masks per split, the ignore value, image sizes, a class histogram "
            "(pixels and images per class, with names) and every problem, one line each: images without a "
            "mask, masks without an image, unreadable images, masks of another size, values outside the "
            "classes, colours no class has, annotations without a mask, empty splits, images in both "
            "train and val. Exit status 1 when problems were found."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "Examples:\n"
            "  atrous data check my_streets\n"
            "  atrous data check cvat_export --split Train --split Validation\n"
            "  atrous data check label_studio_export --set crowd=class\n"
            "  atrous data check colour_masks --set colors=cityscapes"
        ),
    )
    check.add_argument("root", metavar="DIR", help="the dataset folder")
    check.add_argument(
        "--dataset",
        metavar="NAME",
        help="the layout, e.g. folder, coco, cvat-mask, camvid (default: detected from DIR)",
    )
    check.add_argument(
        "--split",
        action="append",
        metavar="NAME",
        help="check this split (repeat for several; default: every split the folder has)",
    )
    check.add_argument("--num-classes", type=positive_int, metavar="K", help="classes of a folder without classes.txt")
    check.add_argument(
        "--ignore-index", type=int, metavar="V", help="mask value of unlabelled pixels, as in `atrous train`"
    )
    check.add_argument(
        "--label-map", metavar="FILE|a:b,...", help="rename mask values first, as `atrous train --label-map`"
    )
    check.add_argument(
        "--set",
        dest="set_items",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a dataset option, as train's --set dataset_options.KEY=VALUE: colors=cityscapes|camvid|camvid32 "
        "(colour masks of a folder), crowd=class, unannotated=background (COCO), val_fraction=0.2",
    )
    check.add_argument("--max-pixels", type=positive_int, metavar="N", help="refuse larger images (default 25,000,000)")
    check.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    check.set_defaults(func=run_check)
    parser.set_defaults(func=lambda args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``build_dataset`` options the flags and ``--set`` give."""
    import yaml

    options: dict[str, Any] = {}
    for flag in ("num_classes", "ignore_index", "label_map", "max_pixels"):
        if getattr(args, flag) is not None:
            options[flag] = getattr(args, flag)
    for item in args.set_items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r} is not KEY=VALUE, e.g. --set colors=cityscapes")
        options[key.strip()] = yaml.safe_load(value)
    return options


def run_check(args: argparse.Namespace) -> int:
    from atrous.cli._inference import check_dataset_option
    from atrous.data.check import check_dataset

    check_dataset_option(args)
    data_log = logging.getLogger("atrous.data")
    level = data_log.level
    if not args.verbose:  # what the layouts log is in the report, once
        data_log.setLevel(logging.ERROR)
    try:
        report = check_dataset(
            args.root, args.dataset, args.split, _options(args), progress=args.progress and sys.stderr.isatty()
        )
    finally:
        data_log.setLevel(level)
    for line in report.lines():
        print(line)
    return 1 if report.all_problems else 0
