"""The ``atrous`` command: one subcommand per module in this package.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and
sets ``func`` (called with the parsed namespace, returns an exit code). Every module
here imports torch, numpy and the heavier atrous modules inside its functions only,
so that ``atrous --help`` and ``atrous CMD --help`` answer at once. Errors raised on
purpose (``AtrousError``) are printed on one line and exit with status 2; pass
``--debug`` for the traceback.

``main`` applies the runtime policy (``atrous.configure_runtime``) before anything
imports torch: how idle OpenMP threads wait is read once, when torch loads.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import signal
import sys
import threading
from collections.abc import Collection, Sequence
from typing import Any, NoReturn

from atrous import __version__
from atrous.errors import AtrousError, Interrupted
from atrous.runtime import configure_runtime

__all__ = ["COMMANDS", "TRAINING_COMMANDS", "build_parser", "command_name", "main", "one_line"]

# Every command and the module that registers it, in the order of `atrous --help`.
COMMANDS = {
    "info": "info",
    "list": "info",
    "data": "data",
    "train": "train",
    "eval": "eval",
    "predict": "predict",
    "crf": "crf",
    "crf-tune": "crf_tune",
    "export": "export",
    "convert": "convert",
    "bench": "bench",
    "demo": "demo",
}
# Commands that train: their OpenMP threads sleep at once when idle (atrous._openmp).
TRAINING_COMMANDS = ("train", "demo")


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (the option, what is wrong, where help is)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser. The modules of ``commands`` (default: every command) register
    their parsers; any other command is a bare name, so that parsing ``atrous CMD …``
    imports one subcommand module (``atrous --help`` imports them all, for their summaries)."""
    parser = _Parser(
        prog="atrous",
        description="DeepLab v1/v2/v3/v3+ and LR-ASPP: train, evaluate, predict, refine with a dense CRF, export.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    parser.add_argument("--version", action="version", version=f"atrous {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = {COMMANDS[name] for name in (COMMANDS if commands is None else commands) if name in COMMANDS}
    for name, module_name in COMMANDS.items():
        if name in subparsers.choices:
            continue  # registered with an earlier command of its module
        module_path = f"atrous.cli.{module_name}"
        if importlib.util.find_spec(module_path) is None:
            continue  # subcommand not available in this build
        if module_name in wanted:
            importlib.import_module(module_path).register(subparsers)
        else:
            subparsers.add_parser(name, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``atrous`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = command_name(argv)
    configure_runtime(training=command in TRAINING_COMMANDS)
    parser = build_parser([command] if command else None)
    try:
        args, extras = parser.parse_known_args(argv)
        if extras:  # named by the subcommand's parser: "atrous predict: error: unrecognized arguments …"
            command_parser = _command_parsers(parser).get(getattr(args, "command", None) or "", parser)
            command_parser.error(f"unrecognized arguments: {' '.join(extras)}")
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
    previous = _stop_on_sigterm()
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at the interpreter's exit
        return status
    except BrokenPipeError:
        # The reader of the output has gone (``atrous list | head``): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
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


def _command_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands' parsers of ``parser``, by command name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def command_name(argv: Sequence[str]) -> str | None:
    """The subcommand in ``argv`` (its first word that is not an option: the top-level
    options take no value), or None."""
    return next((word for word in argv if not word.startswith("-")), None)


def one_line(error: BaseException) -> str:
    """The error's message on one line. An error re-raised by a DataLoader worker ("Caught
    DataError in DataLoader worker process 1. Original Traceback ...") gives back the
    worker's own message, which names the file."""
    from atrous.workers import own_message

    text = own_message(error)
    if isinstance(error, OSError) and error.filename is not None:
        text = f"{error.filename}: {error.strerror or text}"
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
