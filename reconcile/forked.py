"""Run a stream of rows in a forked child process and read it back here.

The local listing is system calls plus Python work per entry; run in a child
it uses the second core while this process walks the source and merges, the
way rsync's sender and receiver are two processes. Rows cross a pipe as
msgpack batches; the pipe's capacity bounds how far the child runs ahead, so
memory stays flat whatever the tree size.

A ReconcileError raised in the child is raised here, same type and message,
at the same point of the stream; a child that dies without finishing is a
Transient error, never a short listing taken for the whole.

A fork copies only the forking thread: a lock another thread held at that
moment (OpenSSL's, an import's, paramiko's) stays held in the child forever,
and the child hangs on it. So the fork happens only while no other thread of
this process runs, except threads parked at the gate (parkable, working);
otherwise the rows are listed in this process, the slow but correct way.
The same goes for upload_child (quiet). A child that sends nothing for
SILENCE seconds, its main thread using no CPU, is killed all the same:
before its first byte the listing is done here instead, after it the run
fails as Transient.
"""

from __future__ import annotations

import gc
import logging
import os
import select
import signal
import threading
import time
from itertools import chain
from typing import Callable, Iterator

import msgpack

from reconcile import errors, portable
from reconcile.portable import posix_only

BATCH = 2048  # rows per frame
PIPE_SIZE = 1 << 20  # how far the child may run ahead (Linux default is 64 KiB)
ROWS, END, ERROR, TAIL, ALIVE = 0, 1, 2, 3, 4
# a child silent this long, its main thread idle, is stuck: longer than a
# connect (socket, handshake, authentication) and a silent server
# (IO_TIMEOUT); a child waiting on a server's sort says it is alive
# (alive()) every HEARTBEAT
SILENCE = 180.0
HEARTBEAT = 10.0
SETTLE = 0.05  # for a thread Python has joined to leave /proc/self/task (seen: a fork refused for it)

_gate = threading.Lock()  # held by a parked thread while it works, by a fork across os.fork
_parked: set[threading.Thread] = set()  # threads that take the gate around their work
_child_pipe: int | None = None  # in a listing child: its pipe, for alive()
_last_alive = 0.0

log = logging.getLogger(__name__)


def available() -> bool:
    """Linux only (on macOS fork is unsafe once system frameworks are
    loaded), and only with a second core to run on: on one core the child
    is pure overhead (packing, unpacking, the pipe)."""
    return portable.FORK and portable.LINUX and len(os.sched_getaffinity(0)) >= 2


Tail = tuple[Callable[[], object], Callable[[object], None]]
Runs = Callable[[], Iterator[list[tuple]]]


def rows(produce: Runs, tail: Tail | None = None, here: Runs | None = None) -> Iterator[tuple]:
    """the rows of produce()'s runs (lists of rows), produced in a child
    process; the child starts on the first next() and is always reaped,
    however the iteration ends. With tail=(make, take), make()'s value in the
    child, taken once the runs are done, reaches take() here before the end.
    Where no child may be forked, or it stalls before sending anything,
    here()'s runs are the rows (default: produce() and its tail, run here)."""
    return chain.from_iterable(_batches(produce, tail, here or (lambda: _in_process(produce, tail))))


def _in_process(produce: Runs, tail: Tail | None) -> Iterator[list[tuple]]:
    yield from produce()
    if tail is not None:
        tail[1](tail[0]())


def _batches(produce: Runs, tail: Tail | None, here: Runs) -> Iterator[list[tuple] | tuple[tuple, ...]]:
    with _gate:  # parked threads stay parked across the fork
        started = _start(produce, tail) if _alone() else None
    if started is None:
        yield from here()
        return
    r, child = started
    try:
        yield from _read(r, child, tail[1] if tail else None)
    except _Stalled:
        log.warning("the listing process sent nothing for %.0f s and was stopped; listing here instead", SILENCE)
    else:
        return
    finally:
        os.close(r)
        child.stop()
    yield from here()


@posix_only
def _start(produce: Runs, tail: Tail | None) -> tuple[int, "_Child"]:
    """fork the child (the caller holds the gate); the pipe's read end and the child"""
    r, w = os.pipe()
    portable.set_pipe_size(w, PIPE_SIZE)
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child never returns)
        os.close(r)
        _child(produce, w, tail[0] if tail else None)
    os.close(w)
    return r, _Child(pid)


def _alone() -> bool:
    """no thread of this process runs but the caller and parked ones (they
    wait at the gate, which the caller holds)."""
    return quiet(sum(t.is_alive() for t in _parked))


def quiet(parked: int = 0) -> bool:
    """no other thread runs in this process now (but parked ones): a fork
    copies no held lock. With none to start one, none starts before the
    caller forks. /proc counts the threads Python does not know of too;
    without fork (or /proc) never quiet."""
    if not portable.FORK:
        return False
    deadline = time.monotonic() + SETTLE
    while threading.active_count() == 1 + parked:
        count = portable.thread_count()
        if count is None:
            return False
        if count == 1 + parked:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)  # a thread just joined leaves the kernel's list a moment later
    return False


def quiet_soon(timeout: float = 0.5) -> bool:
    """quiet() within timeout: threads of connections just closed take a
    moment to end, longer on a busy machine (an upload child was not forked
    for one). Names in the log the threads that still run after it."""
    deadline = time.monotonic() + timeout
    while not quiet():
        if time.monotonic() > deadline:
            names = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
            log.debug("not forking: other threads run (%s)", ", ".join(names) or "not Python's")
            return False
        time.sleep(0.01)
    return True


def parkable(thread: threading.Thread) -> None:
    """let thread run while a child is forked: it must do all its work inside
    working(), and hold no lock between. Call before start()."""
    _parked.add(thread)


def unpark(thread: threading.Thread) -> None:
    _parked.discard(thread)


def working() -> threading.Lock:
    """the gate, held by a parkable thread around each piece of its work: a
    fork waits for that piece to end, and the thread waits for the fork."""
    return _gate


def alive() -> None:
    """in a listing child that waits on something slow but alive (a server
    sorting): tell the parent, every HEARTBEAT. Elsewhere, nothing."""
    global _last_alive
    if _child_pipe is None or time.monotonic() - _last_alive < HEARTBEAT:
        return
    _last_alive = time.monotonic()
    _write(_child_pipe, msgpack.packb((ALIVE,)))


class _Stalled(Exception):
    """the child sent nothing at all for SILENCE seconds"""


@posix_only
def _read(r: int, child: "_Child", take: Callable[[object], None] | None) -> Iterator[tuple[tuple, ...]]:
    unpacker = msgpack.Unpacker(use_list=False, raw=False, unicode_errors="surrogateescape",
                                max_buffer_size=1 << 26)
    poll = select.poll()
    poll.register(r, select.POLLIN)
    heard = False
    worked = _cpu_time(child.pid)
    while True:
        if not poll.poll(SILENCE * 1000):
            if (now := _cpu_time(child.pid)) != worked:
                worked = now  # busy on a slow disk (one huge folder), not stuck
                continue
            child.stop()
            if not heard:
                raise _Stalled
            raise errors.Transient(f"the listing process made no progress for {SILENCE:.0f} s and was "
                                   "stopped; run again")
        if not (data := os.read(r, 1 << 18)):
            break
        heard = True
        unpacker.feed(data)
        for frame in unpacker:
            if frame[0] == ROWS:
                yield frame[1]
            elif frame[0] == TAIL:
                if take is not None:
                    take(frame[1])
            elif frame[0] == END:
                child.wait()
                return
            elif frame[0] != ALIVE:
                raise _error(frame[1], frame[2])
    raise errors.Transient(f"the listing stopped early: its process {child.wait()}")


def _cpu_time(pid: int) -> int | None:
    """the CPU ticks the child's main thread (the one that lists) has used: a
    child stuck on a lock uses none, one reading a slow disk some. Its other
    threads do not count: paramiko's wakes ten times a second whatever."""
    return portable.cpu_ticks(pid)


def _error(name: str, message: str) -> Exception:
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, errors.ReconcileError):
        return cls(message)
    return RuntimeError(f"listing process: {message}")


class _Child:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.reaped = False

    @posix_only
    def wait(self) -> str:
        """reap it (it has ended or is ending); say how it ended."""
        if self.reaped:
            return "ended"
        _, status = os.waitpid(self.pid, 0)
        self.reaped = True
        if os.WIFSIGNALED(status):
            return f"was killed by signal {os.WTERMSIG(status)}"
        return f"exited with code {os.waitstatus_to_exitcode(status)}"

    @posix_only
    def stop(self) -> None:
        """end it if we stopped reading early; never signal a reaped pid (it
        may be reused), and never raise: this runs while another error may
        be on its way out."""
        if self.reaped:
            return
        try:
            os.kill(self.pid, signal.SIGKILL)
            self.wait()
        except (ProcessLookupError, ChildProcessError):
            self.reaped = True  # someone else reaped it


@posix_only
def _child(produce: Callable[[], Iterator[list[tuple]]], w: int, make: Callable[[], object] | None) -> None:
    """list, send, and leave by os._exit: never run the parent's cleanup."""
    global _child_pipe, _last_alive
    code = 0
    try:
        gc.disable()  # no finalizer of a parent object may run here
        logging.disable(logging.CRITICAL)  # the parent's log files are not ours to write
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        # keep no descriptor of the parent's: its run lock must die with it
        os.closerange(3, w)
        os.closerange(w + 1, _max_fd())
        _child_pipe, _last_alive = w, time.monotonic()
        _send(produce, w, make)
    except BrokenPipeError:
        code = 1  # the parent stopped reading
    except BaseException as exc:  # noqa: BLE001 (everything must reach the parent)
        code = 1
        try:
            name = type(exc).__name__ if isinstance(exc, errors.ReconcileError) else ""
            text = str(exc) if name else f"{type(exc).__name__}: {exc}"
            _write(w, msgpack.packb((ERROR, name, text), use_bin_type=True, unicode_errors="surrogateescape"))
        except BaseException:  # noqa: BLE001
            pass
    finally:
        os._exit(code)


def _send(produce: Callable[[], Iterator[list[tuple]]], w: int, make: Callable[[], object] | None) -> None:
    packer = msgpack.Packer(use_bin_type=True, unicode_errors="surrogateescape")
    batch: list[tuple] = []
    try:
        for run in produce():
            batch += run
            if len(batch) >= BATCH:
                _write(w, packer.pack((ROWS, batch)))
                batch = []
    finally:
        if batch:  # the rows before an error reach the parent before the error does
            _write(w, packer.pack((ROWS, batch)))
    if make is not None:
        _write(w, packer.pack((TAIL, make())))
    _write(w, packer.pack((END,)))


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@posix_only
def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):
        return 65536
