"""reconcile watch: file events mark paths dirty; a quiet moment starts one
ordinary run (engine.Run.apply: journal, guards, trash, excludes, pair lock
and move detection as `apply`) that walks only the dirty paths.

Per pair: watches first, then a full run (what changed while nothing was
watching). Losses (queue overflow, no watch, a watcher error) mark the
subtree or the root dirty; folders without a watch are rescanned on a timer
and a randomised full rescan runs every --full-rescan. A failed run keeps its
paths dirty and is retried with a growing wait; the process never exits over
it. SIGTERM or Ctrl-C stops it: a run in progress stops as Ctrl-C stops
`apply` (its journal keeps the rest) and the exit code is 130, else 0.
"""

from __future__ import annotations

import ctypes
import gc
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from reconcile.errors import EXIT_USAGE
from reconcile.watch.changes import Change, DirtySet
from reconcile.watch.state import WatchState

LOSS_SAID_EVERY = 60.0
BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)


def clock() -> float:
    """the loop's clock. On Linux it counts a laptop's sleep (CLOCK_BOOTTIME):
    a retry that fell due during the sleep is due at wake-up, not its
    remaining wait later"""
    return time.clock_gettime(BOOTTIME) if BOOTTIME is not None else time.monotonic()
# dirty paths (None: everything), the source's device at the start -> exit code
RunOne = Callable[[list[str] | None, int | None], int]
OFF_DISK_CHECK = 2.0  # seconds between looks at a source whose disk went away


@dataclass
class WatchSettings:
    quiet_for: float = 1.0  # no event for this long: run
    max_wait: float = 10.0  # events keep coming: run this long after the first anyway
    full_rescan: float = 3600.0  # every this long (randomised +-25%) the whole tree is walked
    unwatched_every: float = 60.0  # folders without a watch are rescanned this often
    dirty_limit: int = 10_000  # paths kept before they fold into their parents
    retry_max: float = 300.0  # the longest wait between failed runs


@dataclass
class PairWatch:
    name: str | None
    source: str
    run_one: RunOne
    skip: Callable[[str, bool], bool]  # excluded(path, is_dir): never watched nor marked
    state: WatchState
    settings: WatchSettings
    watcher: object = None
    dirty: DirtySet = field(default_factory=DirtySet)
    first_dirty: float | None = None
    last_event: float = 0.0
    writers: dict[str, tuple] = field(default_factory=dict)  # path -> (size, mtime_ns) or None, when it moved
    retry_at: float = 0.0
    failures: int = 0
    next_full: float = 0.0
    next_unwatched: float = 0.0
    said: dict[str, float] = field(default_factory=dict)  # cause of a loss -> when the log last said it
    device: tuple[int, bool] | None = None  # the source's st_dev at the start, and whether it was a mount point
    off_disk: bool = False  # the source left that device: nothing runs until it is back

    def start(self, now: float) -> None:
        from reconcile.watch import open_watcher

        self.dirty = DirtySet(self.settings.dirty_limit)
        self.watcher = open_watcher(self.source, self.skip)
        self.feed(self.watcher.watch_tree(""), now)  # before the first walk: nothing slips between
        self.mark("", now)
        self.last_event = now - self.settings.quiet_for  # the start-up run goes at once
        self.next_full = now + self._full_interval()
        self.next_unwatched = now + self.settings.unwatched_every
        self.device = _device(self.source)
        self.state.update(watcher=type(self.watcher).__name__, dirty_pending=len(self.dirty))

    def _full_interval(self) -> float:
        return self.settings.full_rescan * random.uniform(0.75, 1.25)

    def mark(self, path: str, now: float) -> None:
        self.dirty.add(path)
        if self.first_dirty is None:
            self.first_dirty = now
            if self.state.doc.get("state") == "watching":
                self.state.update(state="pending")  # status: changes wait for a run
        self.last_event = now

    def feed(self, changes: list[Change], now: float) -> None:
        for c in changes:
            if c.lost:
                self._lost(c, now)
            self.mark(c.path, now)
            if c.closed:
                self.writers.pop(c.path, None)
            elif c.writing:
                self.writers.setdefault(c.path, (None, now))

    def _lost(self, c: Change, now: float) -> None:
        """events lost or that cannot come: said in the log (once a minute
        for the same cause) and in status; the path is rescanned all the same"""
        self.state.error(c.lost)
        cause = c.lost.split(":")[0]
        if now - self.said.get(cause, -LOSS_SAID_EVERY) >= LOSS_SAID_EVERY:
            self.said[cause] = now
            print(f"warning: {c.lost}; rescanning {c.path or 'the whole source'}", file=sys.stderr, flush=True)

    def on_disk(self) -> bool:
        """the source is on the device it was on at the start, or is a mount
        point now: a disk plugged in again comes back under another device
        number, and one mounted after the watch started on its bare folder (a
        watch started at boot before the disk) is the disk. Such a one is
        watched afresh and rescanned whole, as one that came back. A missing
        source counts as on it: the run refuses it on its own (check_paths)."""
        now = _device(self.source)
        if now is None:
            return True
        if self.device is None or now[0] == self.device[0]:
            self.device = now
            return True
        if now[1]:
            self.off_disk = True  # check_disk: the old watches are on another file system
            return True
        return False

    def check_disk(self, now: float) -> bool:
        """False while the source is off its disk: said once in the log and
        status; once it is back, watched afresh (the old watches were on the
        unmounted disk, or on the bare folder) and rescanned whole"""
        if self.on_disk():
            if self.off_disk:
                self.off_disk = False
                print(f"watch: {self.source} is back on its disk; watching it again and rescanning it whole",
                      file=sys.stderr, flush=True)
                self.watcher.close()
                self.start(now)
            return True
        if not self.off_disk:
            from reconcile.engine import off_disk_message

            self.off_disk = True
            message = off_disk_message(self.source)
            print(f"error: {message}", file=sys.stderr, flush=True)
            self.state.update(state="off-disk")
            self.state.error(message)
        self.retry_at = now + OFF_DISK_CHECK
        return False

    def poll(self, now: float) -> None:
        self.feed(self.watcher.read(0), now)  # read while off the disk too: unread events would wake the loop
        if self.off_disk and now >= self.retry_at and not self.check_disk(now):
            return
        if now >= self.next_full:
            self.next_full = now + self._full_interval()
            print(f"watch: full rescan of {self.source} (every --full-rescan, in case an event was missed)",
                  file=sys.stderr, flush=True)
            self.mark("", now)
            self.last_event = now - self.settings.quiet_for
        if now >= self.next_unwatched:
            self.next_unwatched = now + self.settings.unwatched_every
            if self.watcher.unwatched:
                self.feed(self.watcher.retry_unwatched(), now)

    def settled(self, now: float) -> bool:
        """no file is still being written: closed (where the watcher says so),
        or its size and mtime still for the quiet period"""
        closes = getattr(self.watcher, "reports_close", False)
        for path, (sig, moved) in list(self.writers.items()):
            if closes:
                if now - moved < self.settings.max_wait:
                    return False  # open for writing and not closed yet
                del self.writers[path]
                continue
            now_sig = _signature(os.path.join(self.source, path))
            if now_sig != sig:
                self.writers[path] = (now_sig, now)
                return False
            if now - moved < self.settings.quiet_for:
                return False
            del self.writers[path]
        return True

    def due(self, now: float) -> bool:
        if self.off_disk or not self.dirty or now < self.retry_at or self.first_dirty is None:
            return False
        if now - self.first_dirty >= self.settings.max_wait:
            return True
        return now - self.last_event >= self.settings.quiet_for and self.settled(now)

    def next_wake(self, now: float) -> float:
        """seconds until due() may change without an event"""
        times = [self.next_full, self.next_unwatched] + ([self.retry_at] if self.off_disk else [])
        if self.dirty and self.first_dirty is not None:
            times.append(max(self.retry_at, min(self.first_dirty + self.settings.max_wait,
                                                self.last_event + self.settings.quiet_for)))
            if self.writers:
                times.append(now + min(self.settings.quiet_for, 0.5))
        return max(min(times) - now, 0.01)

    def run(self, now: float) -> int | None:
        """one run of the dirty paths; None when the source is off its disk (nothing ran)"""
        if not self.check_disk(now):
            return None
        paths = self.dirty.take()
        self.first_dirty = None
        self.writers.clear()
        self.state.run_started(len(paths))
        rc = None
        try:
            rc = self.run_one(None if "" in paths else paths, self.device[0] if self.device else None)
        finally:
            if rc != 0:
                self.dirty.put_back(paths)  # a failed or interrupted run is done again
                self.first_dirty = self.first_dirty or clock()
            self.state.run_ended(rc, len(self.dirty))
            _give_back_memory()
        if rc == 0:
            self.failures = 0
            self.retry_at = 0.0
        else:
            self.failures += 1
            wait = min(self.settings.retry_max, 2.0 ** min(self.failures, 12)) * random.uniform(0.8, 1.2)
            self.retry_at = clock() + wait
        return rc

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()


def _give_back_memory() -> None:
    """a run of a large tree frees most of what it built; glibc keeps the
    pages unless asked: a watcher idles for hours, so hand them back"""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).malloc_trim(0)
        except (OSError, AttributeError):
            pass  # not glibc (musl): it keeps them


def _device(path: str) -> tuple[int, bool] | None:
    try:
        return os.stat(path).st_dev, os.path.ismount(path)
    except OSError:
        return None


def _signature(path: str) -> tuple | None:
    try:
        s = os.lstat(path)
    except OSError:
        return None
    return (s.st_size, s.st_mtime_ns)


class Stop(Exception):
    """SIGTERM: leave as Ctrl-C does"""


def watch_pairs(pairs: list[PairWatch]) -> int:
    """until SIGTERM or Ctrl-C: 0 when stopped between runs, 130 during one"""
    from reconcile.watch.inotify import wait_any

    old = _on_sigterm()
    running = False
    try:
        now = clock()
        for p in pairs:
            p.start(now)
        while True:
            now = clock()
            for p in pairs:
                p.poll(now)
            for p in pairs:
                if p.due(clock()):
                    running = True
                    rc = p.run(clock())
                    running = False
                    if rc == EXIT_USAGE and p.state.runs == 1:
                        return rc  # bad flags or config: every run would fail the same way
            now = clock()
            wait = min(p.next_wake(now) for p in pairs)
            waiting = [p.watcher for p in pairs]
            if all(w.fileno() is not None for w in waiting):
                wait_any(waiting, wait)
            else:
                _wait_events(waiting, wait)
    except KeyboardInterrupt:
        for p in pairs:
            p.state.stopped("interrupted during a run; the next start resumes it" if running else None)
        return 130 if running else 0
    finally:
        for p in pairs:
            p.close()
        signal.signal(signal.SIGTERM, old)


def _wait_events(watchers: list, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(getattr(w, "wake", None) is not None and w.wake.is_set() for w in watchers):
            return
        time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))


def _on_sigterm():
    """SIGTERM raises KeyboardInterrupt in the main thread: a run stops as on Ctrl-C"""
    return signal.signal(signal.SIGTERM, signal.default_int_handler)
