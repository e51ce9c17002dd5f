"""BusyTimer: device busy time of each forward, so CPU overhead per step is visible.

On CUDA it records an event pair around the forward and reads the elapsed time lazily (a later
step, once the events have completed), so measuring never adds a host sync. On CPU the device is
the host: it records wall time.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from typing import Deque, List, Optional, Tuple

import torch


class BusyTimer:
    def __init__(self, device: str, keep: int = 4096):
        self.cuda = device == "cuda"
        self._pending: Deque[Tuple[object, object]] = deque()
        self.samples_ms: Deque[float] = deque(maxlen=keep)

    @contextlib.contextmanager
    def measure(self):
        if not self.cuda:
            t0 = time.perf_counter()
            yield
            self.samples_ms.append((time.perf_counter() - t0) * 1e3)
            return
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        yield
        end.record()
        self._pending.append((start, end))
        self._collect()

    def _collect(self) -> None:
        while self._pending and self._pending[0][1].query():
            start, end = self._pending.popleft()
            self.samples_ms.append(start.elapsed_time(end))

    def drain(self) -> List[float]:
        """All samples so far (waits for pending events), then clears them."""
        if self.cuda:
            torch.cuda.synchronize()
            self._collect()
        out = list(self.samples_ms)
        self.samples_ms.clear()
        return out

    def last_ms(self) -> Optional[float]:
        if self.cuda:
            self._collect()
        return self.samples_ms[-1] if self.samples_ms else None
