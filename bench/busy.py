"""`atrous demo` on an idle machine and beside a CPU hog that takes half the cores.

The demo (train briefly, evaluate, predict, CRF, pictures) runs as users run it, as the
`atrous` command in a fresh process with no thread or OpenMP settings of its own (the
command chooses them), first on the idle machine, then while a hog process keeps
``--hog-threads`` threads (default 2) busy with float32 matrix products (PyTorch with its
default, spinning OpenMP threads: the kind of neighbour, another training run, that slows
a demo with unbounded spinning ≥ 6.8×).
Runs alternate idle / busy ``--rounds`` times; medians are reported, with the slow-down
ratio. The bar: busy ≤ 2.5× idle.

    python bench/busy.py [--rounds 1] [--epochs 1] [--hog-threads 2]

Writes ``bench/results/<cpu family>/busy.md`` (``bench/_family.py``: another family's table is kept).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from _family import cpu_line, results_path

HOG = """
import os, torch
torch.set_num_threads(int(os.environ["HOG_THREADS"]))
a = torch.randn(1024, 1024)
while True:
    a = torch.tanh(a @ a)
"""


# What a process chooses for itself (atrous sets these when imported): each child here
# gets the environment as a user's fresh shell would have it.
OPENMP_SETTINGS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def clean_environment() -> dict[str, str]:
    """This process's environment without the OpenMP settings."""
    return {k: v for k, v in os.environ.items() if k not in OPENMP_SETTINGS}


@contextlib.contextmanager
def cpu_hog(threads: int) -> Iterator[None]:
    """A PyTorch process keeping ``threads`` threads busy (libgomp's default waiting, as
    another user's training would) for the duration of the block."""
    hog = subprocess.Popen(
        [sys.executable, "-c", HOG],
        env={**clean_environment(), "HOG_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)},
    )
    try:
        time.sleep(3)  # the hog is spinning before the measurement starts
        yield
    finally:
        hog.kill()
        hog.wait()


def write_result(name: str, text: str) -> None:
    """Print ``text`` and write it to bench/results/<cpu family>/NAME.md (a docs block)."""
    print(text)
    out = results_path(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")


def demo_seconds(out: Path, epochs: int | None) -> float:
    env = clean_environment()
    command = [str(Path(sys.executable).parent / "atrous"), "demo", "--out", str(out)]
    if epochs is not None:
        command += ["--epochs", str(epochs)]
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=3600)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--epochs", type=int, help="override the demo recipe's epochs (default: as shipped)")
    parser.add_argument("--hog-threads", type=int, default=2, help="threads the hog keeps busy (default 2)")
    args = parser.parse_args()
    cores = os.cpu_count() or 2
    hog_threads = args.hog_threads
    idle, busy = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(args.rounds):
            idle.append(demo_seconds(Path(scratch) / f"idle{round_index}", args.epochs))
            print(f"idle: {idle[-1]:.0f} s", flush=True)
            with cpu_hog(hog_threads):
                busy.append(demo_seconds(Path(scratch) / f"busy{round_index}", args.epochs))
            print(f"busy: {busy[-1]:.0f} s", flush=True)
    idle_s, busy_s = statistics.median(idle), statistics.median(busy)
    text = (
        f"`atrous demo` ({'recipe epochs' if args.epochs is None else f'{args.epochs} epoch(s)'}), {cores} cores "
        f"({cpu_line()}), median of {args.rounds} alternating round(s) (`python bench/busy.py`):\n\n"
        "| machine | demo time | vs idle |\n|---|---:|---:|\n"
        f"| idle | {idle_s:.0f} s | 1.00× |\n"
        f"| beside a {hog_threads}-thread PyTorch CPU hog | {busy_s:.0f} s | {busy_s / idle_s:.2f}× |\n"
    )
    write_result("busy", text)


if __name__ == "__main__":
    main()
