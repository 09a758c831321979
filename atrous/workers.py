"""DataLoader worker set-up shared by training and the inference commands (a leaf)."""

from __future__ import annotations

import signal

__all__ = ["leave_stop_signals_to_the_main_process"]


def leave_stop_signals_to_the_main_process(_worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: a worker ignores SIGINT and SIGTERM.

    ``docker stop``, ``timeout``, Slurm, Kubernetes and a terminal's Ctrl-C signal the
    whole process group. A worker that died of it would make the main process report a
    data error and stop before saving; ignoring it lets the main process finish the
    step, save and shut its workers down (they also exit when their parent dies).
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
