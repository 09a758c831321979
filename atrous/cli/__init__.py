"""The ``atrous`` command: one subcommand per module in this package.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and
sets ``func`` (called with the parsed namespace, returns an exit code). Errors raised
on purpose (``AtrousError``) are printed on one line and exit with status 2; pass
``--debug`` for the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from atrous.errors import AtrousError

# Order of appearance in `atrous --help`.
SUBCOMMAND_MODULES = (
    "info",
    "train",
    "eval",
    "predict",
    "crf",
    "crf_tune",
    "export",
    "convert",
    "bench",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="atrous",
        description="DeepLab v1/v2/v3/v3+ and LR-ASPP: train, evaluate, predict, refine with a dense CRF, export.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(f"atrous.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name == f"atrous.cli.{name}":
                continue  # subcommand not available in this build
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``atrous`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except AtrousError as error:
        if args.debug:
            raise
        print(f"atrous {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"atrous {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
