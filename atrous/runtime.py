"""The process-wide settings atrous runs best with, applied only when asked.

``import atrous`` changes nothing in the process. The ``atrous`` command calls
``configure_runtime`` first thing; a program using atrous as a library may call it too,
before it imports torch (the OpenMP setting is read once, when torch loads):

    import atrous
    atrous.configure_runtime()          # inference; training=True for a training process
    import torch

What it sets, each only where the user has not chosen already (the environment variable
named is present) — see ``atrous._openmp`` and ``atrous._malloc`` for the measurements:

- how idle OpenMP threads wait: ``GOMP_SPINCOUNT=10000`` (inference) or
  ``OMP_WAIT_POLICY=PASSIVE`` (training), skipped once torch is loaded;
- glibc's malloc keeps freed blocks for reuse (``keep_freed_memory``), skipped off glibc
  or when ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` is set;
- torch's intra-op thread count, only when ``threads`` is given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from atrous._malloc import keep_freed_memory as _keep_freed_memory
from atrous._openmp import set_wait_policy
from atrous.errors import ConfigError

# More threads than this per CPU only oversubscribes (and a huge count exhausts OpenMP's memory).
MAX_THREADS_PER_CPU = 4


@dataclass(frozen=True)
class RuntimeSettings:
    """What ``configure_runtime`` changed: the OpenMP variable it set (None: the user's own
    setting stands, or torch was already loaded), the torch thread count it set (None: left
    as it was) and whether glibc's malloc keeps freed memory from this call on."""

    openmp: tuple[str, str] | None
    threads: int | None
    freed_memory_kept: bool


def configure_runtime(
    *, training: bool = False, threads: int | None = None, keep_freed_memory: bool = True
) -> RuntimeSettings:
    """Apply atrous's runtime policy to this process (see the module docstring) and say
    what changed. ``training`` picks the OpenMP wait policy of a training process;
    ``threads`` (≥ 1) sets ``torch.set_num_threads``; ``keep_freed_memory=False`` leaves
    malloc as it is."""
    for name, value in (("training", training), ("keep_freed_memory", keep_freed_memory)):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False; got {value!r}")
    if threads is not None:
        limit = max(MAX_THREADS_PER_CPU * (os.cpu_count() or 1), MAX_THREADS_PER_CPU)
        if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= limit:
            raise ConfigError(
                f"threads must be a whole number from 1 to {limit} (this machine has {os.cpu_count()} CPUs); got {threads!r}"
            )
    openmp = set_wait_policy(training=training)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    kept = _keep_freed_memory() if keep_freed_memory else False
    return RuntimeSettings(openmp=openmp, threads=threads, freed_memory_kept=kept)
