"""--bwlimit: one budget of bytes per second shared by all transfers."""

from __future__ import annotations

import threading
import time


class Bandwidth:
    """A token bucket with a one-second burst once transfers are under way:
    transfers report what they sent and sleep here until the budget has caught up."""

    def __init__(self, rate: float, clock=time.monotonic, sleep=time.sleep) -> None:
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        # the budget starts with the first byte, not when the run began: the
        # walk, listing and hashing before it must not save up a burst
        self._free_at: float | None = None

    def consume(self, n: int) -> None:
        with self._lock:
            now = self._clock()
            if self._free_at is None:
                self._free_at = now
            # at most one second of unused budget may be saved up between transfers
            self._free_at = max(self._free_at, now - 1.0) + n / self.rate
            wait = self._free_at - now
        if wait > 0:
            self._sleep(wait)


class ThrottledReporter:
    """Passes every report on, holding back the sender while over budget."""

    def __init__(self, reporter, bandwidth: Bandwidth) -> None:
        self._reporter = reporter
        self._bandwidth = bandwidth

    def sent(self, n: int) -> None:
        self._reporter.sent(n)
        self._bandwidth.consume(n)

    def __getattr__(self, name: str):
        return getattr(self._reporter, name)
