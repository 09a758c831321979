"""`atrous --help`, `atrous CMD --help` and `atrous --version` answer without loading torch.

Each runs in a fresh interpreter, which must then hold none of the heavy modules (torch,
numpy, PIL, ONNX): the command line is parsed before anything heavy loads, so help is
immediate. No timing is asserted; the modules loaded are what decides the time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from atrous import __version__
from atrous.cli import COMMANDS, build_parser, command_name

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "numpy", "PIL", "torchvision", "onnx", "onnxruntime")

PROBE = """
import contextlib, io, json, sys
from atrous.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = main(sys.argv[1:])
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(HEAVY))
print(json.dumps({"code": code, "heavy": heavy, "out": out.getvalue()}))
"""


def _run(*argv: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{PROBE}", *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], *[[name, "--help"] for name in COMMANDS]], ids=" ".join)
def test_help_loads_no_heavy_module(argv: list[str]) -> None:
    found = _run(*argv)
    assert found["code"] == 0
    assert f"usage: atrous {argv[0] if len(argv) > 1 else ''}".rstrip() in found["out"]
    assert found["heavy"] == [], f"`atrous {' '.join(argv)}` imported {found['heavy']}"


def test_version() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "atrous", "--version"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    assert (run.returncode, run.stdout.strip()) == (0, f"atrous {__version__}")


def test_every_command_a_module_registers_is_in_the_table() -> None:
    """COMMANDS (what `atrous CMD` loads, in `atrous --help`'s order) is every command the
    subcommand modules register, each with a one-line summary."""
    subparsers = next(action for action in build_parser()._actions if action.dest == "command")
    registered = {action.dest: action.help for action in subparsers._choices_actions}
    assert list(registered) == list(COMMANDS)
    assert all(summary and "\n" not in summary for summary in registered.values()), registered


def test_the_command_is_the_first_word_that_is_not_an_option() -> None:
    assert command_name(["--debug", "-v", "train", "--data", "x"]) == "train"
    assert command_name(["--help"]) is None
    assert command_name([]) is None


def test_a_closed_output_pipe_ends_a_command_quietly() -> None:
    """``atrous info camvid | head -1``: the reader leaves early; no error, no traceback."""
    read, write = os.pipe()
    os.close(read)
    result = subprocess.run(
        [sys.executable, "-m", "atrous", "list", "--weights"],
        stdout=write,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )
    os.close(write)
    assert result.stderr == "" and result.returncode == 128 + signal.SIGPIPE


def test_counts_take_whole_numbers_in_e_notation() -> None:
    """``--max-pixels 5e8`` is 500,000,000; ``1.5e0``, ``inf`` and overflowing ``1e400`` stay one-line refusals."""
    import argparse

    from atrous.cli._options import positive_int

    assert positive_int("5e8") == 500_000_000 and positive_int("12") == 12
    for text in ("1.5e0", "inf", "1e400", "abc"):
        with pytest.raises(argparse.ArgumentTypeError, match="whole number"):
            positive_int(text)
