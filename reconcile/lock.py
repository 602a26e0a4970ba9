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


def held_by(path: str) -> tuple[str, float] | None:
    """(pid, since when) of the run holding the lock at path now, else None
    (status asks). On Linux /proc/locks says it without touching the lock; elsewhere
    a shared lock is tried and dropped at once (a run starting in that instant
    would find it busy: exit 5, and says so)."""
    try:
        fd = os.open(path, os.O_RDONLY | portable.BINARY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None  # no lock file: no run ever took it
    try:
        st, pid = os.fstat(fd), _read_holder(fd)
        if os.path.exists(PROC_LOCKS):
            held = _in_proc_locks(st.st_ino, pid)
        else:
            held = not _try_shared(fd)
        return (pid or "?", st.st_mtime) if held else None  # the holder wrote its pid on taking it
    finally:
        os.close(fd)


PROC_LOCKS = "/proc/locks"


def _in_proc_locks(inode: int, pid: str) -> bool:
    """a FLOCK line of /proc/locks ("1: FLOCK ADVISORY WRITE <pid> <maj>:<min>:<inode> 0 EOF")
    on this inode, taken by the pid the lock file names"""
    try:
        with open(PROC_LOCKS) as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
            if not pid or fields[4] == pid:
                return True
    return False


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

    def _try_shared(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBRLCK, 1)
        except OSError:
            return False
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return True
else:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _try_shared(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return False
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
