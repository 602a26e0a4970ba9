"""A pause point for the kill tests; off unless RECONCILE_TEST_STALL is set.

A SIGKILL after a random delay often lands after the apply has ended, and
then proves nothing. With

    RECONCILE_TEST_STALL=<point>  RECONCILE_TEST_STALL_FILE=<path>

the apply writes <path> (one JSON object: the point and the operation) when
it reaches <point>, then holds every thread that reports to it until <path>
is removed; a test kills it there, or cuts its connection, fills a disk or
stops a server and then removes <path> to let it go on. Points:

    upload[:N]   the Nth report of bytes sent for an upload that has not
                 sent all of its bytes yet (the file is half sent), or for a
                 move that sends its files because its source was gone
    move[:N]     the Nth move is about to run (likewise delete, mkdir, link)
    op:N         the Nth operation of any kind is about to run

It fires once per process. Normal runs never set the variable: wrap() then
hands back the reporter it was given.
"""

from __future__ import annotations

import json
import os
import threading
import time

STALL = "RECONCILE_TEST_STALL"
STALL_FILE = "RECONCILE_TEST_STALL_FILE"


class _Stall:
    def __init__(self, point: str, marker: str) -> None:
        kind, _, nth = point.partition(":")
        self.kind, self.nth, self.marker = kind, int(nth or 1), marker
        self.lock = threading.Lock()
        self.seen = 0
        self.fired = False
        self.in_flight: dict[int, list] = {}  # id(op) -> [op, bytes reported since it started, its size]
        self.current: dict[int, object] = {}  # thread -> the operation it started last

    def started(self, op) -> None:
        self.hold()
        with self.lock:
            size = op.entry.size if op.op == "upload" and op.entry is not None else op.size
            if op.op in ("upload", "move") and size > 0:
                self.in_flight[id(op)] = [op, 0, size]
            self.current[threading.get_ident()] = op
            hit = self.kind == "op" or (self.kind == op.op and self.kind != "upload")
            fire = hit and self._count()
        if fire:
            self.fire(op)

    def ended(self, op) -> None:
        with self.lock:
            self.in_flight.pop(id(op), None)

    def sent(self, n: int) -> None:
        self.hold()
        with self.lock:
            mine = self.in_flight.get(id(self.current.get(threading.get_ident())))
            # a thread sending for its own upload counts to it alone; a helper
            # thread (SFTP's range sender) to every upload under way, which
            # never under-counts the one it works for
            counting = [mine] if mine is not None else list(self.in_flight.values())
            partial = None
            for counts in counting:
                counts[1] += n
                if 0 < counts[1] < counts[2]:
                    partial = counts[0]  # some but surely not all of its bytes went
            fire = self.kind == "upload" and partial is not None and self._count()
        if fire:
            self.fire(partial)

    def _count(self) -> bool:
        if self.fired:
            return False
        self.seen += 1
        if self.seen == self.nth:
            self.fired = True
            return True
        return False

    def fire(self, op) -> None:
        what = {"point": self.kind, "pid": os.getpid(), "op": op.op, "path": op.path}
        tmp = self.marker + ".tmp"
        with open(tmp, "w") as f:
            json.dump(what, f)
        os.replace(tmp, self.marker)
        self.hold()

    def hold(self) -> None:
        while self.fired and os.path.exists(self.marker):
            time.sleep(0.01)


_stall: _Stall | None = None
_stall_lock = threading.Lock()


class StallingReporter:
    """Passes every report on; holds the thread at the configured point."""

    def __init__(self, reporter, stall: _Stall) -> None:
        self._reporter = reporter
        self._stall = stall

    def op_started(self, op) -> None:
        self._stall.started(op)
        self._reporter.op_started(op)

    def sent(self, n: int) -> None:
        self._reporter.sent(n)
        self._stall.sent(n)

    def op_ended(self, op, result, error) -> None:
        self._stall.ended(op)
        self._reporter.op_ended(op, result, error)

    def __getattr__(self, name: str):
        return getattr(self._reporter, name)


def wrap(reporter):
    """the reporter, with the test pause point when the environment asks for one."""
    point, marker = os.environ.get(STALL), os.environ.get(STALL_FILE)
    if not point or not marker:
        return reporter
    global _stall
    with _stall_lock:
        if _stall is None:  # one per process: a resumed run and the new plan share it
            _stall = _Stall(point, marker)
    return StallingReporter(reporter, _stall)
