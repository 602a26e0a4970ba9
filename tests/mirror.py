"""Helpers for tests: build trees, run the engine in-process, compare trees."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from reconcile.engine import Run, RunOptions


class SilentReporter:
    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.failed: list[str] = []

    def op_started(self, op) -> None:
        pass

    def sent(self, n: int) -> None:
        pass

    def op_ended(self, op, result, error) -> None:
        if result == "failed":
            self.failed.append(f"{op.op} {op.path}: {error}")

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def run(src, dest_url: str, state_dir, mode: str = "apply", options=None, **kw):
    opts = RunOptions(state_dir=str(state_dir), **kw)
    if options is not None:
        opts.remote = options
        opts.remote.state_dir = None
    r = Run(str(src), dest_url, opts, SilentReporter())
    try:
        return getattr(r, mode)()
    finally:
        r.close()


def tree(root, with_mtime: bool = True) -> dict[str, tuple]:
    """path -> ('d',) or ('f', bytes, mtime_ns) for everything under root."""
    out: dict[str, tuple] = {}
    root = os.fsencode(str(root))
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            out[os.fsdecode(rel)] = ("d",)
        for name in filenames:
            full = os.path.join(dirpath, name)
            rel = os.fsdecode(os.path.relpath(full, root))
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                continue
            with open(full, "rb") as f:
                data = f.read()
            out[rel] = ("f", data, st.st_mtime_ns) if with_mtime else ("f", data)
    return out


def write(path: Path, data: bytes, mtime_ns: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def wait_until_locked(state_dir, timeout: float = 30) -> None:
    """until another process holds the run lock in state_dir."""
    lock = Path(state_dir) / "lock"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lock.exists():
            with open(lock, "a") as f:
                try:
                    import fcntl  # POSIX only, as the run lock it probes (lock.py)

                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(f, fcntl.LOCK_UN)
                except OSError:
                    return
        time.sleep(0.02)
    raise AssertionError(f"no run took the lock in {state_dir}")


def count_calls(monkeypatch, obj, name: str) -> list:
    calls: list = []
    real = getattr(obj, name)

    def counted(*a, **kw):
        calls.append(a)
        return real(*a, **kw)

    monkeypatch.setattr(obj, name, counted)
    return calls
