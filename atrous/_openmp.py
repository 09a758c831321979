"""How idle OpenMP threads wait, chosen per command before torch loads.

libgomp (PyTorch's OpenMP on Linux) lets a thread that finished its share of a parallel
region spin before it sleeps. Unset, it spins 300 000 times: quick on an idle machine,
but beside another busy process a spinning thread holds the core that the thread it
waits for needs (a demo took ≥ 6.8× its idle time). ``PASSIVE`` (sleep at once) is safe
but pays a wake-up for every parallel op. Measured (``bench/threads.py`` and
``bench/busy.py``, README "On a busy machine"):

- training (``atrous train``, and ``atrous demo``, which trains): ``PASSIVE``. A bounded
  spin trained 10 % quicker idle, but beside a 2-thread job the demo, whose data loader
  workers compete too, took 3.2× its idle time with 10 000 spins against 1.4× passive;
- everything else (predict, eval, the CRF, export …): ``GOMP_SPINCOUNT=10000``, 4–5 %
  quicker idle than PASSIVE and no slower beside the same job.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

USER_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
TRAINING_COMMANDS = ("train", "demo")
INFERENCE_SPINS = 10_000


def command_line_command(argv: list[str]) -> str | None:
    """The `atrous` subcommand this process runs (``atrous train …`` or ``python -m atrous
    train …``), or None for any other program importing atrous."""
    if len(argv) < 2 or Path(argv[0]).name not in ("atrous", "-m", "__main__.py"):
        return None
    return argv[1]


def choose_wait_policy(environ: dict[str, str] | None = None, argv: list[str] | None = None) -> tuple[str, str] | None:
    """Set this process's OpenMP waiting (``OMP_WAIT_POLICY=PASSIVE`` for training commands,
    ``GOMP_SPINCOUNT=10000`` otherwise) unless the user set either variable or torch (whose
    OpenMP runtime reads them once) is already loaded; returns the (variable, value) set."""
    environ = os.environ if environ is None else environ
    if "torch" in sys.modules or any(name in environ for name in USER_SETTINGS):
        return None
    if command_line_command(sys.argv if argv is None else argv) in TRAINING_COMMANDS:
        setting = ("OMP_WAIT_POLICY", "PASSIVE")
    else:
        setting = ("GOMP_SPINCOUNT", str(INFERENCE_SPINS))
    environ[setting[0]] = setting[1]
    return setting
