"""How idle OpenMP threads wait: a choice that must be made before torch loads.

libgomp (PyTorch's OpenMP on Linux) lets a thread that finished its share of a parallel
region spin before it sleeps. Unset, it spins 300 000 times: quick on an idle machine,
but beside another busy process a spinning thread holds the core that the thread it
waits for needs (a demo took ≥ 6.8× its idle time). ``PASSIVE`` (sleep at once) is safe
but pays a wake-up for every parallel op. Measured (``bench/threads.py`` and
``bench/busy.py``, docs/benchmarks.md "On a busy machine"):

- training (``atrous train``, and ``atrous demo``, which trains): ``PASSIVE``. A bounded
  spin trained 10 % quicker idle, but beside a 2-thread job the demo, whose data loader
  workers compete too, took 3.2× its idle time with 10 000 spins against 1.4× passive;
- everything else (predict, eval, the CRF, export …): ``GOMP_SPINCOUNT=10000``, 4–5 %
  quicker idle than PASSIVE and no slower beside the same job.

libgomp reads these variables once, when torch loads it; ``atrous.configure_runtime``
(called by the ``atrous`` command at start) sets them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

USER_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
INFERENCE_SPINS = 10_000


def wait_policy(*, training: bool) -> tuple[str, str]:
    """The (variable, value) that suits a training or an inference process."""
    return ("OMP_WAIT_POLICY", "PASSIVE") if training else ("GOMP_SPINCOUNT", str(INFERENCE_SPINS))


def set_wait_policy(*, training: bool, environ: MutableMapping[str, str] | None = None) -> tuple[str, str] | None:
    """Set ``wait_policy(training=...)`` in ``environ`` (default ``os.environ``) unless the
    user set either variable or torch is already loaded (too late: its OpenMP runtime has
    read them); returns the (variable, value) set, or None."""
    environ = os.environ if environ is None else environ
    if "torch" in sys.modules or any(name in environ for name in USER_SETTINGS):
        return None
    variable, value = wait_policy(training=training)
    environ[variable] = value
    return variable, value
