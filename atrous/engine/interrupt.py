"""SIGINT and SIGTERM during training: finish the current step, save ``last.pt``, stop.

Schedulers and ``docker stop`` send SIGTERM, a terminal Ctrl-C sends SIGINT; both are
handled alike. The first signal is a request the loop honours between optimizer steps
(so the checkpoint is consistent); a second one stops at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

from atrous.errors import Interrupted

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Context manager turning SIGINT/SIGTERM into ``requested`` (a signal number or None).

    Inactive (signals keep their handlers) off the main thread or with ``enabled=False``
    (distributed runs, where every process must agree on when to stop).
    """

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if self.enabled:
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None:
            raise Interrupted(signum, f"stopped by a second {name} without saving")
        self.requested = signum
        log.warning("%s received: stopping after this step and saving last.pt (send it again to stop at once)", name)
