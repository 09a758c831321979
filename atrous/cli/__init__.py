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
import re
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any, NoReturn

from atrous._malloc import keep_freed_memory
from atrous.errors import AtrousError, Interrupted

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


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (the option, what is wrong, where help is)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every available subcommand."""
    parser = _Parser(
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
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # usage errors (one line, already printed) and --help
        return exit.code if isinstance(exit.code, int) else 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    keep_freed_memory()  # no page faults for every new large tensor (atrous._malloc)
    previous = _stop_on_sigterm()
    try:
        return int(args.func(args) or 0)
    except (AtrousError, OSError) as error:
        if args.debug:
            raise
        print(f"atrous {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        if args.debug or "DataLoader worker" not in str(error):
            raise
        print(
            f"atrous {args.command}: error: {one_line(error)} (rerun with --workers 0 to see the failing file)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt as error:
        signum = getattr(error, "signum", signal.SIGINT)
        detail = f": {error}" if str(error) else ""
        print(f"atrous {args.command}: interrupted by {signal.Signals(signum).name}{detail}", file=sys.stderr)
        return 128 + int(signum)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def one_line(error: BaseException) -> str:
    """The error's message on one line. An error re-raised by a DataLoader worker ("Caught
    DataError in DataLoader worker process 1. Original Traceback ...") gives back the
    worker's own message, which names the file."""
    text = str(error).strip()
    if isinstance(error, OSError) and error.filename is not None:
        text = f"{error.filename}: {error.strerror or text}"
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = re.sub(r"^[\w.]+(Error|Exception): ", "", last)
    return " ".join(text.split())


def _stop_on_sigterm() -> Any:
    """Treat SIGTERM like Ctrl-C (``Interrupted``), so every command cleans up and says so;
    returns the previous handler (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handle(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    return signal.signal(signal.SIGTERM, handle)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
