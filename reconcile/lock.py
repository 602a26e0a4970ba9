"""One run per SOURCE+DEST: an OS file lock, released by the kernel when its
holder dies, so a stale lock is simply taken over."""

from __future__ import annotations

import os
import sys

from reconcile import portable
from reconcile.errors import LockBusy


class RunLock:
    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        # never through a symlink at the name (it once truncated a root-owned file)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | portable.BINARY | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            _lock(fd)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockBusy(
                f"another reconcile run (pid {holder or '?'}) holds {self.path}; "
                "wait for it to finish, it releases the lock when it ends") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 32).decode().strip()
    except OSError:
        return ""


if sys.platform == "win32":
    import msvcrt

    def _lock(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
else:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
