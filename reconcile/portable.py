"""Platform shims: every POSIX-only fast path, and its portable twin.

Each capability below is true where the OS has the call and the fast path may
use it. RECONCILE_PORTABLE=1 (read once, at import) turns them all off, so the
twins that Windows runs (and macOS, where fork is unsafe) run here too:
scripts/test runs the conformance and command-line tests a second time that
way. What a twin gives up is said at the twin.

Calls Windows lacks are made here or under one of these capabilities (a
sys.platform test, a hasattr, a posix_only function): tests/test_portable_calls.py
walks the package and fails on any other.
"""

from __future__ import annotations

import functools
import mmap
import os
import sys
import threading
from collections import Counter
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

# RECONCILE_PORTABLE=1: behave as where the POSIX-only calls are missing
SIMULATED = os.environ.get("RECONCILE_PORTABLE", "") not in ("", "0")
WINDOWS = sys.platform == "win32"
MACOS = sys.platform == "darwin"
LINUX = sys.platform.startswith("linux")

# fork: the listing child (forked.py) and the upload child (upload_child.py)
FORK = hasattr(os, "fork") and not SIMULATED
# positional reads and writes, which leave the file offset alone and need no lock
PREAD = all(hasattr(os, name) for name in ("pread", "preadv", "pwrite")) and not SIMULATED
# folders opened and used by descriptor, never following a symlink (safepath.py, walk.py)
DIR_FD = ({os.open, os.mkdir, os.rename, os.unlink, os.rmdir, os.stat} <= os.supports_dir_fd
          and hasattr(os, "O_DIRECTORY") and not SIMULATED)
NOFOLLOW = 0 if SIMULATED else getattr(os, "O_NOFOLLOW", 0)
# os.open on Windows is text mode (CRLF and ^Z rewritten by read and write) without it
BINARY = getattr(os, "O_BINARY", 0)
# kernel-side file copies (local destination)
SENDFILE = hasattr(os, "sendfile") and not SIMULATED
COPY_RANGE = hasattr(os, "copy_file_range") and not SIMULATED
# files another program can lock against reading (Windows' sharing modes)
LOCKS = WINDOWS
# /proc: threads of this process, CPU time of a child
PROC = LINUX and not SIMULATED
# private anonymous memory, not shared with a forked child
MAP_PRIVATE = hasattr(mmap, "MAP_PRIVATE") and hasattr(mmap, "MAP_ANONYMOUS") and not SIMULATED

# how often each twin ran in this process (a test of the portable pass checks
# the twins, not the fast paths, did the work)
used: Counter[str] = Counter()

F = TypeVar("F", bound=Callable)


def native(path: str) -> str:
    r"""an absolute path as this OS opens it best: on Windows with the \\?\
    prefix, so paths below it may pass 260 characters (winpath.long_path)"""
    if not WINDOWS:
        return path
    from reconcile import winpath

    return winpath.long_path(path)


def posix_only(fn: F) -> F:
    """a function reached only once FORK held (it runs in or beside a forked
    child): called anywhere else it is a bug, said as such, never an
    AttributeError from a missing os call."""
    @functools.wraps(fn)
    def guarded(*args, **kwargs):
        if not FORK:
            raise RuntimeError(f"{fn.__qualname__} needs fork, which this platform lacks (a bug: "
                               "its caller should have checked portable.FORK)")
        return fn(*args, **kwargs)
    return guarded  # type: ignore[return-value]


def prepare_process() -> None:
    """at the start of a command: output that survives the console's code
    page, and Ctrl-Break handled as Ctrl-C"""
    survive_code_page()
    ctrl_break_as_ctrl_c()


def survive_code_page(streams: tuple | None = None) -> None:
    """a name the console's code page cannot show (cp437, cp1252 on an older
    Windows console; LANG=C elsewhere) is written with backslash escapes,
    \\u65e5, instead of ending the run with UnicodeEncodeError"""
    for stream in streams or (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "").replace("_", "")
        if encoding != "utf8" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def ctrl_break_as_ctrl_c() -> None:
    """Windows: Ctrl-Break (SIGBREAK) ends a run as Ctrl-C does, through
    KeyboardInterrupt: the journal is closed and the next run resumes, instead
    of the process dying where it stands. Nothing elsewhere (no SIGBREAK)."""
    import signal

    if hasattr(signal, "SIGBREAK"):
        signal.signal(signal.SIGBREAK, signal.default_int_handler)


# --- positional reads -------------------------------------------------------------

# the twin moves the file offset: one lock for all of them, so two threads
# reading one file at different offsets never interleave seek and read
_seek_lock = threading.Lock()


def pread(fd: int, length: int, offset: int) -> bytes:
    """up to length bytes at offset, the file offset unchanged"""
    if PREAD:
        return os.pread(fd, length, offset)
    used["pread"] += 1
    with _at(fd, offset):
        return os.read(fd, length)


def pwrite(fd: int, data: bytes, offset: int) -> int:
    """data written at offset, the file offset unchanged"""
    if PREAD:
        return os.pwrite(fd, data, offset)
    used["pwrite"] += 1
    with _at(fd, offset):
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    return len(data)


@contextmanager
def _at(fd: int, offset: int) -> Iterator[None]:
    """the file offset at offset, under the lock, and back where it was after"""
    with _seek_lock:
        here = os.lseek(fd, 0, os.SEEK_CUR)
        try:
            os.lseek(fd, offset, os.SEEK_SET)
            yield
        finally:
            os.lseek(fd, here, os.SEEK_SET)


def pread_into(fd: int, buf, offset: int) -> int:
    """os.preadv(fd, [buf], offset): bytes read into buf, at most len(buf)"""
    if PREAD:
        return os.preadv(fd, [buf], offset)
    data = pread(fd, len(buf), offset)  # one copy more than preadv
    memoryview(buf)[:len(data)] = data
    return len(data)


def read_buffer(size: int) -> mmap.mmap:
    """a page-aligned read buffer, private to this process where fork exists"""
    if MAP_PRIVATE:
        return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    used["read_buffer"] += 1
    return mmap.mmap(-1, size)  # shared with a forked child on POSIX: there is no fork here


# --- what the fork paths use (Linux only: forked.available) ------------------------

F_SETPIPE_SZ = 1031


def set_pipe_size(fd: int, size: int) -> None:
    """a bigger pipe where Linux allows it; a smaller one only means less run-ahead"""
    if not LINUX:
        return
    import fcntl

    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, size)
    except OSError:
        pass


def thread_count() -> int | None:
    """the threads of this process, those Python does not know of too; None
    where there is no way to count them"""
    if not PROC:
        return None
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


def cpu_ticks(pid: int) -> int | None:
    """the CPU ticks a child's main thread has used (utime + stime), or None"""
    if not PROC:
        return None
    try:
        with open(f"/proc/{pid}/task/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None

