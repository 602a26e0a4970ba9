"""SFTP sessions opened ahead of the upload threads (issue 21). Each session
past the first costs three round trips (channel, subsystem, INIT). On a first
sync over a slow link every file will be sent, so the probe opens them while
it and the plan run, and the upload threads find them ready."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Callable


class SessionsAhead:
    """sessions being opened in threads of their own; each taken once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: list[Future] = []

    def start(self, count: int, open_one: Callable[[], object]) -> None:
        for _ in range(count):
            future: Future = Future()
            with self._lock:
                self._futures.append(future)
            threading.Thread(target=_run, args=(future, open_one), name="sftp-ahead", daemon=True).start()

    def take(self, timeout: float):
        """a session opened ahead, waited for up to timeout; None when there
        is none left or it failed (the caller opens one as usual, and says why
        if that fails too)."""
        with self._lock:
            future = self._futures.pop(0) if self._futures else None
        if future is None:
            return None
        try:
            return future.result(timeout)
        except Exception:
            future.add_done_callback(_close_result)  # still opening: closed once it is
            return None

    def close(self) -> None:
        """those never taken: closed, now or once they are open."""
        with self._lock:
            futures, self._futures = self._futures, []
        for future in futures:
            future.add_done_callback(_close_result)


def _run(future: Future, open_one: Callable[[], object]) -> None:
    try:
        future.set_result(open_one())
    except BaseException as exc:  # handed to whoever takes it
        future.set_exception(exc)


def _close_result(future: Future) -> None:
    if future.exception() is None:
        future.result().close()
