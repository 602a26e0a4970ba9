"""Send a share of a run's small files from a forked child process.

Many small files over SFTP cost paramiko's per-packet work, all under one
GIL; a child process with connections of its own uses the second core, the
way rsync's sender and receiver are two processes. The child uploads its
share exactly as the parent's threads do theirs (Executor._uploads) and
reports each result through a pipe; only the parent writes the journal, so
a result the child could not report is replayed by the next run, which is
harmless (uploads go to temp names and re-check the source).

The child dies with the parent (PR_SET_PDEATHSIG): an orphan still writing
the same temp names as a new run would be a hazard.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import select
import signal
import threading
from typing import TYPE_CHECKING

import msgpack

from reconcile import forked
from reconcile.plan import Op
from reconcile.portable import posix_only
from reconcile.remotes.retry import retry_message

if TYPE_CHECKING:
    from reconcile.apply import Executor

REC, SENT, WARN, END, CRASH = 0, 1, 2, 3, 4
FLUSH_AT = 1 << 13  # frames are written in batches of about this many bytes
# a child silent this long is stuck: longer than a connect, a silent server
# and a retry pause together (it reports each retry)
SILENCE = 180
PR_SET_PDEATHSIG = 1


class UploadChild:
    """the child's side seen from the parent: results are recorded as they
    arrive, by a reader thread."""

    @posix_only
    def __init__(self, executor: "Executor", ops: list[Op], share: list[int], transfers: int) -> None:
        self.executor, self.ops = executor, ops
        self.ended = False  # the child said it was done
        parent = os.getpid()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child never returns)
            os.close(r)
            _child(executor, ops, share, transfers, w, parent)
        os.close(w)
        self.r = r
        self.child = forked._Child(pid)
        self._reaping = threading.Lock()  # the reader may kill it, only join reaps it
        self.reader = threading.Thread(target=self._read, name="upload-child", daemon=True)
        try:
            self.reader.start()
        except BaseException:
            os.close(r)
            self.child.stop()
            raise

    @posix_only
    def _read(self) -> None:
        """record what the child reports; never reaps it (join does). Closing
        the pipe on the way out ends a child nobody listens to any more."""
        ex = self.executor
        unpacker = msgpack.Unpacker(raw=False, unicode_errors="surrogateescape")
        poll = select.poll()
        poll.register(self.r, select.POLLIN)
        try:
            while not self.ended:
                if not poll.poll(SILENCE * 1000):
                    ex.gone(f"the upload process said nothing for {SILENCE} s; it was stopped")
                    self._kill()
                    return
                if not (data := os.read(self.r, 1 << 16)):
                    return
                unpacker.feed(data)
                for frame in unpacker:
                    if frame[0] == REC:
                        ex.record_from_child(frame[1], self.ops[frame[1]], frame[2], frame[3], frame[4])
                    elif frame[0] == SENT:
                        ex.reporter.sent(frame[1])
                    elif frame[0] == WARN:
                        ex.reporter.warn(frame[1])
                    elif frame[0] == END:
                        self.ended = True
                        if frame[1]:
                            ex.gone(frame[1])
                        stats = ex.remote.net_stats()
                        if len(frame) > 2 and frame[2] and stats is not None:
                            stats.add(frame[2])  # the child's connections, for -v
                    else:
                        self.ended = True
                        ex.crashed(RuntimeError(f"upload process: {frame[1]}"))
        except BaseException as exc:  # a bug here: stop the run, raise it on the caller's thread
            ex.crashed(exc)
        finally:
            os.close(self.r)

    @posix_only
    def _kill(self) -> None:
        with self._reaping:
            if not self.child.reaped:
                os.kill(self.child.pid, signal.SIGKILL)

    def join(self, stop: bool) -> None:
        """wait for the child (or end it at once), then for its last results."""
        if stop:
            self._kill()
        self.reader.join()
        with self._reaping:
            how = self.child.wait()
        if not self.ended:
            self.executor.gone(f"the upload process {how} before it finished")


class _PipeReporter:
    """the child's reporter: progress and warnings go to the parent."""

    def __init__(self, out: "_Frames") -> None:
        self.out = out

    def op_started(self, op: Op) -> None:
        pass

    def op_ended(self, op: Op, result: str, error: str | None) -> None:
        pass

    def sent(self, n: int) -> None:
        self.out.put((SENT, n))

    def warn(self, message: str) -> None:
        self.out.put((WARN, message))


class _Frames:
    def __init__(self, w: int) -> None:
        self.w = w
        self.packer = msgpack.Packer(use_bin_type=True, unicode_errors="surrogateescape")
        self.buf: list[bytes] = []
        self.size = 0
        self.lock = threading.Lock()

    def put(self, frame: tuple, flush: bool = False) -> None:
        with self.lock:
            data = self.packer.pack(frame)
            self.buf.append(data)
            self.size += len(data)
            if flush or self.size >= FLUSH_AT:
                forked._write(self.w, b"".join(self.buf))
                self.buf.clear()
                self.size = 0


@posix_only
def _child(executor: "Executor", ops: list[Op], share: list[int], transfers: int, w: int, parent: int) -> None:
    """upload the share, report, and leave by os._exit: never run the parent's cleanup."""
    code = 0
    frames: _Frames | None = None
    try:
        gc.disable()  # no finalizer of a parent object (its connections) may run here
        logging.disable(logging.CRITICAL)
        if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0 \
                or os.getppid() != parent:  # no way to die with it, or it died before the prctl
            os._exit(1)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.closerange(3, w)  # the parent's run lock, journal and connections are not ours
        os.closerange(w + 1, forked._max_fd())
        frames = _Frames(w)
        reporter = _PipeReporter(frames)
        remote = executor.remote
        remote.forget_connections()
        policy = getattr(remote, "policy", None)
        if policy is not None:
            policy.on_retry = lambda what, exc, wait: reporter.warn(retry_message(what, exc, wait))
        executor.in_child(reporter, transfers,
                          lambda i, result, error, digest: frames.put((REC, i, result, error, digest)))
        gone = executor.upload_share(ops, share)
        stats = remote.net_stats()
        net = stats.as_list() if stats is not None else None
        frames.put((END, gone, net), flush=True)
    except BaseException as exc:  # noqa: BLE001 (a bug: everything must reach the parent)
        code = 1
        try:
            end = (CRASH, f"{type(exc).__name__}: {exc}")
            if frames is not None:
                frames.put(end, flush=True)  # the results before it go first
            else:
                forked._write(w, msgpack.packb(end, use_bin_type=True))
        except BaseException:  # noqa: BLE001
            pass
    finally:
        os._exit(code)
