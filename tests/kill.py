"""Kills that land by construction.

The apply child runs with reconcile's test pause point (reconcile/testhooks.py):
it stops at a chosen moment (an upload half sent, a move or delete about to
run, the Nth operation) and says so in a marker file. The test then checks the
child is alive and its journal holds that operation as not done, and kills it
there, or does something else to it and lets it go on (release)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from reconcile import journal
from reconcile.testhooks import STALL, STALL_FILE


@dataclass
class Stalled:
    child: subprocess.Popen
    marker: Path
    state: Path
    point: str
    info: dict | None = None  # what the marker said: point, op, path
    pending: int = 0  # operations the journal still had to do when it stopped

    def wait(self, timeout: float = 120) -> dict:
        """until the child reached its point; it must be alive there, with its
        journal on disk and the operation it stopped in not marked done."""
        deadline = time.monotonic() + timeout
        while not self.marker.exists():
            if self.child.poll() is not None:
                err = self.child.stderr.read() if self.child.stderr else ""
                raise AssertionError(f"apply exited {self.child.returncode} before reaching {self.point}: {err}")
            if time.monotonic() > deadline:
                self.child.kill()
                raise AssertionError(f"apply did not reach {self.point} in {timeout:.0f}s")
            time.sleep(0.005)
        self.info = json.loads(self.marker.read_text())
        assert self.child.poll() is None, "the child exited at its pause point"
        pending = journal.load(str(self.state / "journal.msgpack"))
        assert pending is not None, f"no journal while the apply was stopped at {self.info}"
        at = [i for i, op in enumerate(pending.ops) if (op.op, op.path) == (self.info["op"], self.info["path"])]
        assert at and not set(at) <= pending.done, f"the journal has {self.info} done already"
        self.pending = len(pending.remaining)
        return self.info

    def kill(self) -> dict:
        info = self.info or self.wait()
        self.child.send_signal(signal.SIGKILL)
        self.child.wait()
        assert self.child.returncode == -signal.SIGKILL
        assert (self.state / "journal.msgpack").exists(), "a killed apply left no journal"
        self.marker.unlink(missing_ok=True)
        return info

    def release(self) -> None:
        """let the child go on past its point."""
        self.marker.unlink(missing_ok=True)


def start_stalled(args: list[str], point: str, state: Path, marker: Path, env: dict | None = None,
                  **popen) -> Stalled:
    marker.unlink(missing_ok=True)
    full_env = {**os.environ, **(env or {}), STALL: point, STALL_FILE: str(marker)}
    popen.setdefault("stdout", subprocess.DEVNULL)
    popen.setdefault("stderr", subprocess.PIPE)
    child = subprocess.Popen(args, env=full_env, text=True, errors="replace", **popen)
    return Stalled(child, marker, Path(state), point)
