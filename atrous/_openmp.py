"""How long idle OpenMP threads spin before they sleep, chosen before torch loads.

libgomp (PyTorch's OpenMP on Linux) lets a thread that finished its share of a parallel
region spin before it sleeps. Unset, it spins 300 000 times: quick on an idle machine,
but beside another busy process a spinning thread holds the core that the thread it
waits for needs (a demo took ≥ 6.8× its idle time). ``PASSIVE`` (sleep at once) is safe
but pays a wake-up for every parallel op. A bounded spin is both: measured by
``bench/threads.py`` (README "On a busy machine"), 2 000 spins keep training within 3 %
of PASSIVE beside a 2-thread hog and 10 % quicker idle; 10 000 make inference and the
CRF 4–5 % quicker idle and no slower busy, but cost training ~10 % busy.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

USER_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
TRAINING_SPINS = 2_000
INFERENCE_SPINS = 10_000


def command_line_command(argv: list[str]) -> str | None:
    """The `atrous` subcommand this process runs (``atrous train …`` or ``python -m atrous
    train …``), or None for any other program importing atrous."""
    if len(argv) < 2 or Path(argv[0]).name not in ("atrous", "-m", "__main__.py"):
        return None
    return argv[1]


def choose_spin_count(environ: dict[str, str] | None = None, argv: list[str] | None = None) -> str | None:
    """Set ``GOMP_SPINCOUNT`` for this process unless the user set a policy or torch (and
    its OpenMP runtime, which reads the setting once) is already loaded; returns the value set."""
    environ = os.environ if environ is None else environ
    if "torch" in sys.modules or any(name in environ for name in USER_SETTINGS):
        return None
    command = command_line_command(sys.argv if argv is None else argv)
    value = str(TRAINING_SPINS if command == "train" else INFERENCE_SPINS)
    environ["GOMP_SPINCOUNT"] = value
    return value
