"""Carry out a plan against a remote, under the journal.

Moves, deletes and folder creation run in plan order (their order matters);
runs of uploads and touches go through a thread pool. Every operation re-checks the
source first, so replaying a journal after a crash is harmless.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Callable, Protocol

from reconcile import forked, portable, winpath
from reconcile.diff import file_changed
from reconcile.entry import DIR, Entry
from reconcile.errors import NotFound, NotSupported, ReconcileError, Transient
from reconcile.journal import Journal
from reconcile.walk import holds_more_than_files
from reconcile.plan import Op
from reconcile.testhooks import wrap as with_test_stall


class Reporter(Protocol):
    def op_started(self, op: Op) -> None: ...
    def sent(self, n: int) -> None: ...
    def op_ended(self, op: Op, result: str, error: str | None) -> None: ...
    def warn(self, message: str) -> None: ...


class HushableReporter:
    """Passes every report on until hush(). After Ctrl-C the transfer threads
    meet their connections closing ('failed: ... Socket is closed', 'retrying
    in 0.5s'): that is the interruption itself, not news for the user."""

    HUSHED = frozenset({"op_ended", "warn", "waiting"})

    def __init__(self, reporter) -> None:
        self._reporter = reporter
        self.hushed = False

    def hush(self) -> None:
        self.hushed = True

    def __getattr__(self, name: str):
        if self.hushed and name in self.HUSHED:
            return lambda *args: None
        return getattr(self._reporter, name)


@dataclass
class Outcome:
    results: dict[int, tuple[str, str | None]] = field(default_factory=dict)
    remote_gone: str | None = None  # set when the remote stayed away
    expected: frozenset[int] = frozenset()  # every op this run was to carry out
    # a touch or move that sent the whole file after all (the remote's copy was
    # gone, or it cannot move): op index -> bytes sent
    sent_instead: dict[int, int] = field(default_factory=dict)
    # an upload that copied unchanged blocks on the remote (delta): op index -> bytes not sent
    reused: dict[int, int] = field(default_factory=dict)
    # files skipped because another program held them locked (Windows): not backed up
    locked: set[str] = field(default_factory=set)
    # ops that found the remote not as planned on (a move's source or a touch's
    # file gone) and were done another way: a watcher lists again after them
    unexpected: set[int] = field(default_factory=set)

    def count(self, result: str) -> int:
        return sum(1 for r, _ in self.results.values() if r == result)

    @property
    def complete(self) -> bool:
        # an op with no result was never carried out, whatever else went right
        return (self.remote_gone is None and self.count("failed") == 0 and not self.locked
                and self.expected <= self.results.keys())


@dataclass
class Counted:
    """content bytes sent, and bytes not sent thanks to a move or a touch, by
    the operations that completed (what an interrupted run left, included)."""

    sent: int = 0
    saved_move: int = 0
    saved_touch: int = 0
    saved_delta: int = 0

    def add(self, ops: list[Op], outcome: Outcome) -> None:
        for i, (result, _) in outcome.results.items():
            op = ops[i]
            if result != "done":
                continue
            if i in outcome.sent_instead:
                self.sent += outcome.sent_instead[i]
            elif op.op == "upload":
                reused = outcome.reused.get(i, 0)
                self.sent += op.size - reused
                self.saved_delta += reused
            elif op.op == "touch":
                self.saved_touch += op.size
            elif op.op == "move" and op.reason != "temp":  # a temp step is half of another move
                self.saved_move += op.size

    @property
    def saved(self) -> dict[str, int]:
        return {"move": self.saved_move, "touch": self.saved_touch, "delta": self.saved_delta}


@dataclass
class SmallUpload:
    """one whole file for a remote's upload_many; key is the op's index."""

    key: int
    local_path: str
    path: str
    entry: Entry
    hash: bytes | None = None  # set by the remote: the xxh3 of what it sent


class _RemoteGone(Exception):
    pass


PARALLEL = ("upload", "touch")  # ops on one file each, run by the transfer threads
FORK_SMALL_FROM = 1000  # small files from which half go to a child process (upload_child)


class Executor:
    def __init__(self, remote, source_root: str, journal: Journal, reporter: Reporter,
                 transfers: int = 4, fork_small: bool = False) -> None:
        self.remote = remote
        self.source_root = source_root
        # a file's local path by one concatenation where "/" is the separator (once per file sent)
        self._root_slash = source_root.rstrip("/") + "/" if os.sep == "/" and source_root else None
        self.journal = journal
        self.reporter = with_test_stall(reporter)  # unchanged unless a kill test asks for a pause
        self.transfers = max(1, transfers)
        self.outcome = Outcome()
        self._lock = threading.Lock()
        self._crash: BaseException | None = None  # a bug in a worker thread, raised on the caller's
        self.fork_small = fork_small
        # in the upload child: sends each result to the parent, which records it
        self._send: Callable[[int, str, str | None, bytes | None], None] | None = None

    def run(self, ops: list[Op], todo: list[int], resume: dict[int, dict] | None = None) -> Outcome:
        resume = resume or {}
        self.outcome.expected |= frozenset(todo)
        i = 0
        try:
            while i < len(todo):
                if ops[todo[i]].op in PARALLEL:
                    j = i
                    while j < len(todo) and ops[todo[j]].op in PARALLEL:
                        j += 1
                    self._uploads(ops, todo[i:j], resume)
                    i = j
                else:
                    self._one(todo[i], ops[todo[i]], resume)
                    i += 1
        except _RemoteGone:
            pass
        return self.outcome

    # --- bookkeeping ---------------------------------------------------------

    def _record(self, i: int, op: Op, result: str, error: str | None = None) -> None:
        if self._send is not None:
            self._record_in_child(i, op, result, error, self._send)
            return
        with self._lock:
            self.outcome.results[i] = (result, error)
            if result != "failed":
                try:
                    self.journal.done(i, result)
                except OSError as exc:
                    # the state folder is full or gone: stop, the journal keeps the rest
                    self.outcome.remote_gone = (f"cannot write the journal {self.journal.path}: {exc.strerror}; "
                                                "free space there or pass --state-dir")
        self.reporter.op_ended(op, result, error)
        if self.outcome.remote_gone:
            raise _RemoteGone

    def record_from_child(self, i: int, op: Op, result: str, error: str | None, digest: bytes | None) -> None:
        """a result the upload child reported (its reader thread calls this)."""
        if result == "done" and op.entry is not None and op.entry.hash is None:
            op.entry.hash = digest
        try:
            self._record(i, op, result, error)
        except _RemoteGone:
            pass

    def gone(self, message: str) -> None:
        with self._lock:
            self.outcome.remote_gone = self.outcome.remote_gone or message

    def crashed(self, exc: BaseException) -> None:
        """a bug off the caller's thread: stop the others, re-raise it there."""
        with self._lock:
            self._crash = self._crash or exc
            self.outcome.remote_gone = self.outcome.remote_gone or f"{type(exc).__name__}: {exc}"

    def in_child(self, reporter: Reporter, transfers: int,
                 send: Callable[[int, str, str | None, bytes | None], None]) -> None:
        """turn this copy, in the upload child, into one that reports to the parent."""
        self.reporter, self.transfers, self.fork_small = reporter, transfers, False
        self._lock = threading.Lock()  # another thread may have held it at the fork
        self.journal = None  # type: ignore[assignment]
        self._send = send

    def _record_in_child(self, i: int, op: Op, result: str, error: str | None,
                         send: Callable[[int, str, str | None, bytes | None], None]) -> None:
        with self._lock:
            self.outcome.results[i] = (result, error)
        send(i, result, error, op.entry.hash if op.entry is not None else None)
        if self.outcome.remote_gone:
            raise _RemoteGone

    def upload_share(self, ops: list[Op], share: list[int]) -> str | None:
        """in the child: send the share; why the remote went away, if it did."""
        try:
            self._uploads(ops, share, {})
        except _RemoteGone:
            pass
        return self.outcome.remote_gone

    def _one(self, i: int, op: Op, resume: dict[int, dict]) -> None:
        if self.outcome.remote_gone:
            raise _RemoteGone
        self.reporter.op_started(op)
        try:
            result = getattr(self, f"_do_{op.op}")(i, op, resume.get(i))
        except Transient as exc:
            self.outcome.remote_gone = str(exc)
            self._record(i, op, "failed", str(exc))
            raise _RemoteGone from None
        except ReconcileError as exc:
            self._record(i, op, "failed", str(exc))
            return
        except OSError as exc:
            self._record(i, op, "failed", f"{exc.strerror or exc}: {exc.filename or op.path}")
            return
        if isinstance(result, tuple):
            self._record(i, op, *result)
        else:
            self._record(i, op, result)

    def _uploads(self, ops: list[Op], batch: list[int], resume: dict[int, dict]) -> None:
        # workers pull from shared iterators: memory stays flat however
        # many files there are to send. small files first, pipelined where
        # the remote can (upload_many: files up to its batch_max_size), then the rest one by one
        limit = self.remote.batch_max_size
        small = [i for i in batch if self._batchable(ops[i], i, resume, limit)]
        work = iter([i for i in batch if not self._batchable(ops[i], i, resume, limit)] if small else batch)
        threads_here = min(self.transfers, len(batch))
        child = None
        forking = (self.fork_small and len(small) >= FORK_SMALL_FROM and self.transfers >= 2
                   and not self.remote.link_bound())
        if forking:
            # no thread of ours may be inside OpenSSL at the fork (its locks
            # would stay held in the child): close our connections first
            self.remote.close()
        if forking and forked.quiet_soon():  # any other thread may hold a lock the child needs
            from reconcile.upload_child import UploadChild

            # alternate files, so both halves hold alike sizes and folders
            share, small = small[::2], small[1::2]
            child = UploadChild(self, ops, share, self.transfers // 2)
            threads_here -= self.transfers // 2
        small_work = iter(small)
        take = threading.Lock()

        def work_all() -> None:
            if small:
                self._small_uploads(ops, small_work, take)
            while not self.outcome.remote_gone:
                with take:
                    i = next(work, None)
                if i is None:
                    return
                try:
                    self._one(i, ops[i], resume)
                except _RemoteGone:
                    return

        def worker() -> None:
            try:
                work_all()
            except BaseException as exc:  # a bug: stop the others, re-raise it on the caller's thread
                self.crashed(exc)

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(threads_here)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        except BaseException:
            if child is not None:
                child.join(stop=True)  # interrupted: the child's share is left to the journal
            raise
        if child is not None:
            child.join(stop=bool(self.outcome.remote_gone or self._crash))
        if self._crash is not None:
            raise self._crash
        if self.outcome.remote_gone:
            raise _RemoteGone

    @staticmethod
    def _batchable(op: Op, i: int, resume: dict[int, dict], limit: int) -> bool:
        e = op.entry
        return op.op == "upload" and e is not None and e.size <= limit and not op.backup and i not in resume

    def _small_uploads(self, ops: list[Op], work, take: threading.Lock) -> None:
        """one pipelined stream of small uploads; each op is recorded done only
        once the remote reports it in place."""
        taken: dict[int, Op] = {}  # handed to the remote, not yet reported

        def items():
            while not self.outcome.remote_gone:
                with take:
                    i = next(work, None)
                if i is None:
                    return
                op = ops[i]
                self.reporter.op_started(op)
                local = self._local(op.path)
                moved = self._source_moved(op, local)
                if moved:
                    self._record(i, op, "skipped", moved)
                    continue
                taken[i] = op
                yield SmallUpload(i, local, op.path, op.entry)

        def done(item: SmallUpload, error: ReconcileError | None) -> None:
            op = taken.pop(item.key)
            if error is not None:
                self._record(item.key, op, "failed", str(error))
                return
            self._sent(op, item.local_path, item.hash)
            self._record(item.key, op, "done")

        try:
            while not self.outcome.remote_gone:
                try:
                    self.remote.upload_many(items(), done, progress=self.reporter.sent)
                    return
                except Transient as exc:
                    self.outcome.remote_gone = str(exc)
                    # the first op in flight carries the error; the journal replays the rest
                    for i, op in list(taken.items())[:1]:
                        self._record(i, op, "failed", str(exc))
                    return
                except (ReconcileError, OSError) as exc:
                    # not about one file: each op it held fails alike, the rest go on
                    if not taken and not self._take_one(ops, work, take, taken):
                        return
                    for i, op in list(taken.items()):
                        del taken[i]
                        self._record(i, op, "failed", str(exc))
        except _RemoteGone:
            return

    def _take_one(self, ops: list[Op], work, take: threading.Lock, taken: dict[int, Op]) -> bool:
        """the next op, to carry an error met before any was taken (each loop fails one)."""
        with take:
            i = next(work, None)
        if i is None:
            return False
        self.reporter.op_started(ops[i])
        taken[i] = ops[i]
        return True

    def _source_moved(self, op: Op, local: str | None = None) -> str | None:
        """why an upload is skipped: the source is gone or changed since the plan."""
        e = op.entry
        local = local or self._local(op.path)
        try:
            s = os.stat(local)
        except FileNotFoundError:
            return "the source file is gone"
        if (s.st_size, s.st_mtime_ns) != (e.size, e.mtime_ns):
            return "the source file changed since the plan; the next run sends it"
        if portable.LOCKS and winpath.locked(local):
            self.outcome.locked.add(op.path)
            why = ("another program has it locked (a sharing violation); close that program or exclude "
                   "the file: the next run sends it")
            self.reporter.warn(f"{op.path} not sent: {why}")
            return why
        return None

    def _sent(self, op: Op, local: str, digest: bytes | None) -> None:
        """after an upload: warn if the source changed meanwhile; else keep
        the hash the remote took of what it sent, for the next snapshot."""
        e = op.entry
        try:
            after = os.stat(local)
        except FileNotFoundError:
            return
        if (after.st_size, after.st_mtime_ns) != (e.size, e.mtime_ns):
            self.reporter.warn(f"{op.path} changed while it was sent; the next run sends it again")
        elif e.hash is None:
            e.hash = digest

    def _local(self, path: str) -> str:
        if self._root_slash is not None:
            return self._root_slash + path
        return os.path.join(self.source_root, *path.split("/"))

    # --- operations ----------------------------------------------------------

    def _do_upload(self, i: int, op: Op, state: dict | None):
        e = op.entry
        assert e is not None
        moved = self._source_moved(op)
        if moved:
            return "skipped", moved
        if op.backup:
            self._to_trash(op.path, op.backup)
        local = self._local(op.path)
        got = self.remote.upload(local, op.path, e, progress=self.reporter.sent, resume=state,
                                 checkpoint=lambda st: self.journal.checkpoint(i, st))
        self._sent(op, local, got.hash)
        if got.reused:
            self.outcome.reused[i] = got.reused
        return "done"

    def _do_touch(self, i: int, op: Op, state: dict | None):
        """the remote holds this content: set its mtime only. Where it no
        longer holds it (changed or gone since the plan), the file is sent."""
        assert op.entry is not None
        moved = self._source_moved(op)
        if moved:
            return "skipped", moved
        try:
            self.remote.touch(op.path, op.entry)
        except NotFound:
            self.outcome.unexpected.add(i)
            result = self._do_upload(i, op, state)
            if result == "done":
                self.outcome.sent_instead[i] = op.entry.size
            return result
        return "done"

    def _do_mkdir(self, i: int, op: Op, state: dict | None):
        self.remote.mkdir(op.path)
        return "done"

    def _do_link(self, i: int, op: Op, state: dict | None):
        assert op.entry is not None and op.entry.target is not None
        self.remote.symlink(op.entry.target, op.path)
        return "done"

    def _do_move(self, i: int, op: Op, state: dict | None):
        caps = self.remote.capabilities
        if op.backup and op.to:
            self._to_trash(op.to, op.backup)
        try:
            if op.kind == DIR and not caps.dir_move:
                self._move_files(op)
            else:
                self.remote.move(op.path, op.to)
        except NotFound as exc:
            self.outcome.unexpected.add(i)
            return self._send_instead_of_move(i, op, state, getattr(exc, "moved", []))
        except NotSupported:
            return self._move_by_upload(i, op)
        return "done"

    def _send_instead_of_move(self, i: int, op: Op, state: dict | None, moved: list[tuple[str, str]]):
        """the move's source is not on the remote: a replay after a crash (it
        moved already), or deleted or moved behind our back. Each file the
        target does not hold as it is here is sent from the source; a file
        still at the old name (a folder moved in part) is moved first.
        moved: the pairs a move_many that failed in part did move."""
        if op.reason == "temp" or op.to is None:
            # parked under a temp name for a swap: the move out of it sends the files
            return "skipped", f"{op.path} is no longer on the remote; the move to its new name sends it"
        if op.kind != DIR:
            return self._send_unless_held(i, op.to, state, single=True)
        caps = self.remote.capabilities
        # a whole folder renamed in one request is either all there or all gone
        gone_whole = caps.dir_move and self.remote.stat(op.to) is None
        done_already = {dst for _, dst in moved}
        missing = []
        for f in op.files:
            if f"{op.to}/{f}" in done_already:
                continue
            if not caps.dir_move:
                try:
                    self.remote.move(f"{op.path}/{f}", f"{op.to}/{f}")
                    continue
                except NotFound:
                    pass
            result = self._send_unless_held(i, f"{op.to}/{f}", None, single=False, known_absent=gone_whole)
            if result != "done":
                missing.append(f"{op.to}/{f}")
        if missing:
            return "skipped", f"{len(missing)} of its files are gone from the source too, first {missing[0]}"
        if gone_whole and holds_more_than_files(self._local(op.to)):
            # the move would have carried its symlinks and empty folders; the plan dropped them
            # from what to make: the next run's listing finds them missing and makes them
            return "failed", (f"{op.path} was gone from the remote: its files were sent to {op.to}, "
                              "its symlinks and empty folders are made by the next run")
        return "done"

    def _send_unless_held(self, i: int, path: str, state: dict | None, single: bool,
                          known_absent: bool = False):
        """send the local file at path unless the remote holds it as it is here."""
        try:
            st = os.stat(self._local(path))
        except FileNotFoundError:
            return "skipped", f"{path} is gone from the remote and from the source"
        entry = Entry(path, size=st.st_size, mtime_ns=st.st_mtime_ns, mode=st.st_mode)
        caps = self.remote.capabilities
        held = None if known_absent else self.remote.stat(path)
        if held is not None and not file_changed(held, entry, caps.mtime_precision_ns, span=caps.mtime_range):
            return "done"  # replayed after a crash: it moved already
        got = self.remote.upload(self._local(path), path, entry, progress=self.reporter.sent,
                                 resume=state if single else None,
                                 checkpoint=(lambda s: self.journal.checkpoint(i, s)) if single else None)
        self._sent(Op("upload", path, entry=entry), self._local(path), got.hash)
        self.outcome.sent_instead[i] = self.outcome.sent_instead.get(i, 0) + st.st_size - got.reused
        return "done"

    def _move_files(self, op: Op) -> None:
        self.remote.move_many([(f"{op.path}/{f}", f"{op.to}/{f}") for f in op.files])

    def _move_by_upload(self, i: int, op: Op):
        # slow but safe: send the target from the source, then drop the old copy
        if op.kind == DIR or op.reason == "temp" or op.to is None:
            return "failed", "the remote cannot move this and there is no fallback"
        local = self._local(op.to)
        st = os.stat(local)
        entry = Entry(op.to, size=st.st_size, mtime_ns=st.st_mtime_ns)
        self.remote.upload(local, op.to, entry, progress=self.reporter.sent)
        got = self.remote.stat(op.to)
        if got is None or got.size != st.st_size:
            return "failed", f"could not confirm the copy of {op.to}"
        self.remote.delete(op.path)
        self.outcome.sent_instead[i] = st.st_size
        return "done"

    def _do_delete(self, i: int, op: Op, state: dict | None):
        if op.reason == "deleted" and os.path.lexists(self._local(op.path)):
            # the source came back since the plan: never delete what still exists
            return "skipped", "the source has it again"
        if op.backup:
            return self._delete_to_trash(op)
        if op.kind != DIR:
            self.remote.delete(op.path)
            return "done"
        self.remote.delete_many([f"{op.path}/{f}" for f in op.files])
        for d in op.dirs:
            self._rmdir_quietly(f"{op.path}/{d}")
        kept = self._rmdir_quietly(op.path)
        if kept:
            return "done", kept
        return "done"

    def _to_trash(self, path: str, backup: str) -> None:
        # the old version is either still in place or already in the trash
        try:
            self.remote.move(path, backup)
        except NotFound:
            pass

    def _delete_to_trash(self, op: Op):
        if op.kind != DIR:
            self._to_trash(op.path, op.backup)
            return "done"
        if self.remote.capabilities.dir_move and self.remote.stat(op.backup) is None:
            self._to_trash(op.path, op.backup)
            return "done"
        # per file: a remote without folder moves, or a resumed half-done move
        for f in op.files:
            self._to_trash(f"{op.path}/{f}", f"{op.backup}/{f}")
        for d in op.dirs:
            self._rmdir_quietly(f"{op.path}/{d}")
        self._rmdir_quietly(op.path)
        return "done"

    def _rmdir_quietly(self, path: str) -> str | None:
        if not self.remote.capabilities.empty_dirs:
            return None
        try:
            self.remote.rmdir(path)
        except Transient:
            raise
        except ReconcileError as exc:
            msg = f"kept folder {path}: {exc}"
            self.reporter.warn(msg)
            return msg
        return None
