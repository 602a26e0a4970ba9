"""watch.json in the pair's state folder (mode 0600): what `reconcile status`
shows of a running watcher. Written whole, atomically, at each change of
state that matters (start, run start and end, a loss of events, stop)."""

from __future__ import annotations

import json
import os
import time

from reconcile.statefile import open_read, write_private

WATCH_FILE = "watch.json"
RESULTS = {0: "ok", 1: "error", 2: "config-error", 3: "partial", 4: "refused", 5: "locked", 130: "interrupted"}


class WatchState:
    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, WATCH_FILE)
        self.runs = 0
        self.doc: dict = {"pid": os.getpid(), "since": time.time(), "state": "starting", "watcher": None,
                          "last_run": None, "dirty_pending": 0, "last_error": None, "last_error_at": None,
                          "runs": 0, "stopped": None}
        self._save()

    def _save(self) -> None:
        try:
            write_private(self.path, json.dumps(self.doc).encode())
        except OSError:
            pass  # status is a courtesy: never stop watching over it

    def update(self, **fields) -> None:
        self.doc.update(fields)
        self._save()

    def error(self, message: str) -> None:
        self.update(last_error=message, last_error_at=time.time())

    def run_started(self, dirty: int) -> None:
        self.runs += 1
        self.update(state="running", dirty_pending=dirty, runs=self.runs, run_started=time.time())

    def run_ended(self, rc: int | None, dirty: int) -> None:
        result = RESULTS.get(rc, "error") if rc is not None else "interrupted"
        last = {"started": self.doc.get("run_started"), "ended": time.time(), "result": result, "exit_code": rc}
        fields = {"state": "pending" if dirty else "watching", "last_run": last, "dirty_pending": dirty}
        if rc not in (0, None):
            fields.update(last_error=f"run ended {result} (exit {rc}); retrying", last_error_at=time.time())
        self.update(**fields)

    def stopped(self, why: str | None) -> None:
        self.update(state="stopped", stopped=time.time(), stop_reason=why)


def read_watch_state(state_dir: str) -> dict | None:
    """the last watcher's state, with alive: whether its process still runs"""
    try:
        with open_read(os.path.join(state_dir, WATCH_FILE)) as f:
            doc = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    doc["alive"] = doc.get("state") != "stopped" and _alive(doc.get("pid"))
    return doc


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def watch_lines(doc: dict | None) -> list[str]:
    """what `reconcile status` prints of a watcher"""
    if doc is None:
        return []
    when = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "?"  # noqa: E731
    if doc.get("alive"):
        head = f"watch: running (pid {doc.get('pid')}) since {when(doc.get('since'))}"
        if doc.get("state") == "off-disk":
            head += "; paused: the source's disk is not mounted (nothing is synced or deleted until it is back)"
    elif doc.get("state") == "stopped":
        head = f"watch: stopped at {when(doc.get('stopped'))}"
    else:
        head = f"watch: not running (pid {doc.get('pid')} ended without stopping; restart it: README \"Watch\")"
    lines = [head]
    last = doc.get("last_run")
    if last:
        lines.append(f"watch last run: {when(last.get('ended'))}, {last.get('result')}")
    lines.append(f"watch dirty paths pending: {doc.get('dirty_pending', 0)}")
    if doc.get("last_error"):
        lines.append(f"watch last error: {when(doc.get('last_error_at'))}: {doc['last_error']}")
    return lines
