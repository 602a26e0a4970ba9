"""The watcher where inotify is not available (macOS FSEvents, Windows
ReadDirectoryChangesW), through watchdog; on Linux only when
RECONCILE_WATCHER=watchdog asks for it (tests run it there too).

watchdog reports events lost (EventsLostEvent: Windows' buffer overflow,
Linux's queue overflow) and errors of its emitter thread; each marks the
root dirty. What it does not report (a folder it could not watch) is what
the periodic full rescan is for, run more often with this watcher.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Callable

from reconcile.watch.changes import Change

SOURCE_GONE = "the source folder is missing (not mounted?); watching it again when it is back"


class PortableWatcher:
    reports_close = False  # a file is settled when its size and mtime stay still
    def __init__(self, root: str, skip: Callable[[str, bool], bool]) -> None:
        from watchdog.observers import Observer

        self.root = os.path.abspath(root)
        self.skip = skip
        self.unwatched: dict[str, str] = {}
        self.events: queue.SimpleQueue[Change] = queue.SimpleQueue()
        self.wake = threading.Event()
        self._observer = Observer()

    def fileno(self) -> None:
        return None

    def watch_tree(self, rel: str = "") -> list[Change]:
        if rel == "" and not self._observer.is_alive():
            return self._start()
        return []

    def _start(self) -> list[Change]:
        try:
            self._observer = _restart(self._observer, self)
        except OSError:  # the source folder is missing: tried again by retry_unwatched
            self.unwatched[""] = SOURCE_GONE
            return [Change("", tree=True, lost=SOURCE_GONE)]
        self.unwatched.pop("", None)
        return []

    def retry_unwatched(self) -> list[Change]:
        if self.unwatched.pop("", None) is None:
            return []
        return self._start() or [Change("", tree=True)]

    def _rel(self, path) -> str | None:
        path = os.fsdecode(path)
        rel = os.path.relpath(path, self.root)
        if rel == ".":
            return ""
        if rel.startswith(".."):
            return None
        return rel.replace(os.sep, "/")

    def put(self, change: Change) -> None:
        self.events.put(change)
        self.wake.set()

    def read(self, timeout: float) -> list[Change]:
        if not self._observer.is_alive() and "" not in self.unwatched:
            # its thread died (an error it could not handle): everything may have changed
            return self._start() or [Change("", tree=True, lost="the file watcher stopped; restarted it")]
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                self.wake.clear()
                return out

    def close(self) -> None:
        if self._observer.is_alive():  # never started when the source was missing
            self._observer.stop()
            self._observer.join(timeout=5)


def _restart(old, watcher: PortableWatcher):
    from watchdog.observers import Observer

    try:
        old.stop()
    except Exception:  # it is dead already; only a new one matters
        pass
    new = Observer()
    new.schedule(_Handler(watcher), watcher.root, recursive=True)
    new.start()
    return new


def _handler_base():
    from watchdog.events import FileSystemEventHandler

    return FileSystemEventHandler


class _Handler(_handler_base()):  # type: ignore[misc]
    def __init__(self, watcher: PortableWatcher) -> None:
        self.watcher = watcher

    def dispatch(self, event) -> None:
        w = self.watcher
        kind = type(event).__name__
        if kind == "DirModifiedEvent":
            return  # the events of the entries in it name them
        if kind == "EventsLostEvent":
            w.put(Change("", tree=True, lost="file events were lost (the watcher's queue overflowed)"))
            return
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if not path:
                continue
            rel = w._rel(path)
            if rel is None or rel == "" and event.is_directory:
                continue
            if rel and w.skip(rel, event.is_directory):
                continue
            w.put(Change(rel, tree=event.is_directory,
                         writing=kind in ("FileModifiedEvent", "FileCreatedEvent"),
                         closed=kind == "FileClosedEvent"))
