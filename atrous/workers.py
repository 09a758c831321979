"""DataLoader worker set-up shared by training and the inference commands (a leaf)."""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["batches", "leave_stop_signals_to_the_main_process", "own_message"]


def batches(loader: Iterable[Any]) -> Iterator[Any]:
    """Iterate a DataLoader; when a batch fails (a worker's error, e.g. a corrupt file),
    stop its worker processes before the error propagates.

    Left to the garbage collector (the error's traceback keeps the iterator alive), the
    workers never receive DataLoader's stop message and each is killed only after its
    5 s join timeout: a command would print its one-line error and then hang 10–20 s.
    """
    iterator = iter(loader)
    try:
        yield from iterator
    except Exception:
        stop = getattr(iterator, "_shutdown_workers", None)  # DataLoader's own shutdown; absent without workers
        if stop is not None:
            stop()
        raise


def own_message(error: BaseException) -> str:
    """The error's message; for an error a DataLoader worker re-raised ("Caught DataError
    in DataLoader worker process 1. Original Traceback ..."), the worker's own message,
    which names the file."""
    text = str(error).strip()
    if "Original Traceback" in text:
        text = re.sub(r"^[\w.]+(Error|Exception): ", "", text.splitlines()[-1])
    return text


def leave_stop_signals_to_the_main_process(_worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: stop signals meant for the run reach the main process alone.

    ``docker stop``, ``timeout``, Slurm, Kubernetes and a terminal's Ctrl-C signal the
    whole process group. A worker that died of it would make the main process report a
    data error and stop before saving. So a worker ignores SIGINT, and SIGTERM from
    anyone but its parent. Its parent's own SIGTERM (how DataLoader and multiprocessing
    shut down a worker that did not stop by itself, e.g. at interpreter exit) still ends
    it at once: ignoring that one would leave the main process waiting forever. The
    sender is read with ``sigwaitinfo`` on a thread; where that does not exist (macOS),
    SIGTERM keeps its default action.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not hasattr(signal, "sigwaitinfo"):
        return
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # threads started from here inherit it
    threading.Thread(target=_end_on_parents_sigterm, args=(parent,), name="atrous-sigterm", daemon=True).start()


def _end_on_parents_sigterm(parent: int) -> None:
    while True:
        info = signal.sigwaitinfo({signal.SIGTERM})
        if info.si_pid == parent or os.getppid() != parent:
            os._exit(128 + signal.SIGTERM)  # the parent asked (or is gone): end as SIGTERM would
