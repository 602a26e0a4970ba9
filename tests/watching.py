"""Helpers for the `reconcile watch` tests: the watcher runs as a child
process, as systemd would start it; tests poll the destination (never a
timing) until it holds what they expect."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.storage import read_dest

FAST = ["--quiet-for", "0.3s", "--max-wait", "5s", "-v"]


class Watcher:
    def __init__(self, src: Path, dest, state: Path, log: Path, args=(), env: dict | None = None,
                 wrap: list[str] = ()) -> None:
        self.log = log
        self.state = state
        full_env = {**os.environ, **dest.env, **(env or {})}
        full_env.pop("COLUMNS", None)
        self.err = open(log, "ab")
        self.proc = subprocess.Popen(
            [*wrap, sys.executable, "-m", "reconcile", "watch", str(src), dest.url, *dest.cli_args,
             "--state-dir", str(state), *FAST, *map(str, args)],
            stdout=subprocess.DEVNULL, stderr=self.err, env=full_env)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def runs(self) -> int:
        """summary lines so far: one per finished run"""
        return sum(1 for line in self.text().splitlines() if line.startswith(("ok: ", "partial: ")))

    def wait_log(self, pred, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if pred(text):
                return text
            assert self.proc.poll() is None, f"watch exited {self.proc.returncode}:\n{text}"
            time.sleep(0.1)
        raise AssertionError(f"watch log never matched:\n{self.text()[-3000:]}")

    def wait_idle(self, timeout: float = 60) -> None:
        """until the watcher is between runs with nothing pending (watch.json),
        for a while: a stop then ends it with 0, not 130"""
        deadline = time.monotonic() + timeout
        idle_since = None
        while time.monotonic() < deadline:
            try:
                state = json.loads((self.state / "watch.json").read_text()).get("state")
            except (OSError, ValueError):
                state = None
            if state != "watching":
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > 1.5:
                return
            assert self.proc.poll() is None, f"watch exited {self.proc.returncode}:\n{self.text()}"
            time.sleep(0.1)
        raise AssertionError(f"watch never went idle:\n{self.text()[-3000:]}")

    def stop(self, sig=signal.SIGTERM, timeout: float = 60, idle: bool = True) -> int:
        """SIGTERM, by default once the watcher is idle (then it exits 0)"""
        if idle and self.proc.poll() is None:
            self.wait_idle()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.err.close()
        assert "Traceback" not in self.text(), self.text()
        return rc


def wait_dest(dest, expect: dict[str, bytes], watcher: Watcher | None = None, timeout: float = 120,
              exact: bool = True) -> None:
    """until the destination holds exactly expect (its files and contents)"""
    deadline = time.monotonic() + timeout
    files: dict = {}
    while time.monotonic() < deadline:
        try:
            files = read_dest(dest).files
        except Exception:  # a key or file that went away while it was read: the run is still going
            time.sleep(0.2)
            continue
        if (files == expect) if exact else all(files.get(k) == v for k, v in expect.items()):
            return
        if watcher is not None:
            assert watcher.proc.poll() is None, f"watch exited {watcher.proc.returncode}:\n{watcher.text()}"
        time.sleep(0.2)
    missing = sorted(set(expect) - set(files))[:10]
    extra = sorted(set(files) - set(expect))[:10]
    wrong = sorted(k for k in expect if k in files and files[k] != expect[k])[:10]
    log = watcher.text()[-3000:] if watcher else ""
    raise AssertionError(f"destination never matched: missing {missing}, extra {extra}, wrong {wrong}\n{log}")


def tree_files(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out
