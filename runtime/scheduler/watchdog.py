"""`--watchdog-timeout`: end the scheduler process when one step (a forward batch) hangs.

A hung step (a stuck kernel, a deadlocked collective) would otherwise leave the server up, its
/health green and every request waiting forever. The scheduler wraps each step in
`Watchdog.step()`; a daemon thread checks how long the current step has been running and, past
the timeout, logs why and ends the process. The HTTP server sees its scheduler die and exits
with code 1 (docs/server.md, "Processes and lifetime"). Idle time between steps never counts.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from sgl.runtime.entry.process_utils import exit_now

logger = logging.getLogger(__name__)

EXIT_CODE = 1
# The thread wakes this often (at most once a second), so it fires within ~1/4 of the timeout.
_POLLS_PER_TIMEOUT = 4
_MAX_POLL_S = 1.0
_MIN_POLL_S = 0.005


def exit_process(elapsed_s: float) -> None:
    """The default action: flush the logs and end the process at once (the step may never return)."""
    exit_now(EXIT_CODE)


class Watchdog:
    def __init__(self, timeout_s: float, on_fire: Callable[[float], None] = exit_process) -> None:
        if timeout_s <= 0:
            raise ValueError(f"watchdog_timeout must be positive, got {timeout_s}")
        self.timeout_s = timeout_s
        self.on_fire = on_fire
        self.poll_s = min(max(timeout_s / _POLLS_PER_TIMEOUT, _MIN_POLL_S), _MAX_POLL_S)
        self._step_started: Optional[float] = None  # monotonic start of the running step
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "Watchdog":
        self._thread = threading.Thread(target=self._watch, name="sgl-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @contextmanager
    def step(self) -> Iterator[None]:
        """Time one scheduler step."""
        self._step_started = time.monotonic()
        try:
            yield
        finally:
            self._step_started = None

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            started = self._step_started
            if started is None:
                continue
            elapsed = time.monotonic() - started
            if elapsed > self.timeout_s:
                logger.error(
                    "Watchdog fired: a scheduler step (forward batch) has been running for %.2f s, longer than "
                    "--watchdog-timeout %g s. The scheduler process exits.", elapsed, self.timeout_s)
                self.on_fire(elapsed)
                return
