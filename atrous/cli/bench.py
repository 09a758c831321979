"""``atrous bench``: run the benchmark scripts of a source checkout (``bench/*.py``).

The benchmarks compare atrous with its peers (torchvision, segmentation-models-pytorch,
pydensecrf2) in one process and print ratios; they live in the repository, not in the
installed package, so this command needs the checkout (e.g. an editable install).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from atrous.errors import DataError


def bench_folder() -> Path:
    """``bench/`` beside the ``atrous`` package (a source checkout), else ``DataError``."""
    folder = Path(__file__).resolve().parents[2] / "bench"
    if not (folder / "run_all.py").is_file():
        raise DataError(
            f"no benchmark scripts at {folder}; `atrous bench` runs the bench/ folder of a source checkout "
            "(git clone the repository and pip install -e .)"
        )
    return folder


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="run the benchmarks against torchvision / smp / pydensecrf2 (source checkout)",
        description=__doc__.split("\n\n", 1)[1].strip().replace("``", ""),
        epilog="Example: atrous bench inference   (one script's own options: python bench/inference.py --help)",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run, e.g. inference crf (default: all)")
    parser.add_argument("--list", action="store_true", help="list the available benchmarks and exit")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    folder = bench_folder()
    command = [sys.executable, str(folder / "run_all.py")]  # it checks the names and lists the scripts
    if args.list:
        command.append("--list")
    if args.names:
        command += ["--only", ",".join(args.names)]
    return subprocess.call(command, cwd=folder.parent)
