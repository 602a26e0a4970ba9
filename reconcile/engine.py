"""One run: lock, resume, walk + merge, plan, guards, apply, commit state."""

from __future__ import annotations

import errno
import json
import os
import time
import uuid
from contextlib import AbstractContextManager, nullcontext
from typing import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from reconcile import forked, portable
from reconcile import journal as journal_mod
from reconcile import snapshot
from reconcile.apply import Counted, Executor, Outcome, Reporter
from reconcile.bwlimit import Bandwidth, ThrottledReporter
from reconcile.diff import Changes, merge_rows, with_implied_dirs
from reconcile.entry import DIR, FILE, LINK, Entry, encode_path, entry_of, is_inside, is_safe_path, row_of, row_path
from reconcile.errors import (ConfigError, NotFound, ReconcileError, SafetyRefusal, SourceChanged,
                              Transient, UnresolvedHost)
from reconcile.excludes import Excludes
from reconcile.hashing import hash_file
from reconcile.lock import RunLock
from reconcile.names import CollisionWatch, case_renames, clamp_warnings, refusals, to_stored
from reconcile.pairs import (check_destination, check_reverse, local_dest_path, record_destination,
                             refuse_unknown_host)
from reconcile.plan import Plan, keep_copies, make_plan, needs_hash, prune_trash
from reconcile.remotes import dest_kind, open_remote, remote_class
from reconcile.remotes.base import RemoteOptions
from reconcile.remotes.retry import RetryingRemote, RetryPolicy, retry_message
from reconcile.spool import walk_while_waiting
from reconcile.statedir import StateDir, display_url, pair_id
from reconcile.statefile import write_private
from reconcile.trash import DEFAULT_TRASH, TRASH_RECORD, known_trash, trash_root
from reconcile.walk import WalkReport, walk_rows, walk_rows_partial

SNAPSHOT_BYTES_PER_ENTRY = 50  # measured: 49 on the benchmark trees
# files from this size are hashed on two threads (xxh3 and read() free the GIL
# for long enough); smaller ones in one thread, where two took 3.7x longer
# (0.47 s against 0.13 s on 10,000 files of 1-32 KB)
HASH_THREADED_FROM = 1 << 20


@dataclass
class RunOptions:
    delete: bool = False
    exclude: list[str] = field(default_factory=list)
    max_delete: int | None = None
    allow_empty_source: bool = False
    offline: bool = False
    state_dir: str | None = None
    checksum: bool = False
    links: str = "skip"
    backup_dir: str | None = None  # a path on the destination: the remote trash
    backup_keep_days: float | None = None
    bwlimit: float | None = None  # bytes per second, all transfers together
    allow_new_destination: bool = False  # a destination that held files may start again empty
    allow_reverse: bool = False  # SOURCE may be the DEST of another recorded pair
    remote: RemoteOptions = field(default_factory=RemoteOptions)
    # walk only these source paths and take the rest from the snapshot (reconcile watch)
    walk_only: list[str] | None = None
    # the source's device (st_dev) when reconcile watch started: a run that finds the
    # source on another one (its disk unmounted, the bare mount point left) refuses
    source_dev: int | None = None


@dataclass
class RunResult:
    source: str
    dest: str
    plan: Plan
    walk: WalkReport
    changes: Changes
    outcome: Outcome | None = None
    resumed: Outcome | None = None
    resumed_ops: list = field(default_factory=list)  # the interrupted run's plan, resumed first
    pending_journal: int = 0
    warnings: list[str] = field(default_factory=list)
    # source files and folders this run could not read: (path, reason); a folder ends in /
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    # source entries the destination cannot hold (names.py): (path, why); not sent, counted as skipped
    not_stored: list[tuple[str, str]] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    ended: float = 0.0
    counted: Counted = field(default_factory=Counted)  # bytes sent and saved, resumed ops included


OUTAGE_GAP = 5.0  # seconds past a retry's due time after which the next one starts a new wait


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


RUN_NAME = "%Y-%m-%dT%H%M%SZ"  # trash run folders: UTC, sortable, no colons
def check_paths(source: str, dest: str) -> str:
    src = os.path.abspath(os.path.expanduser(source))
    if not os.path.exists(src):
        raise SafetyRefusal(
            f"source {src} does not exist (not mounted?); nothing was changed on the remote")
    if not os.path.isdir(src):
        raise SafetyRefusal(f"source {src} is not a folder; give the folder to mirror")
    try:
        with os.scandir(src) as it:
            next(it, None)
    except OSError as exc:
        raise SafetyRefusal(f"cannot read source {src} ({exc.strerror}); nothing was changed on the remote") from None
    if dest_kind(dest) == "local":
        d = dest[len("file://"):] if dest.startswith("file://") else dest
        d = os.path.realpath(os.path.expanduser(d))
        s = os.path.realpath(src)
        if is_inside(d, s) or is_inside(s, d):
            raise ConfigError(f"source {src} and destination {d} overlap; choose folders outside each other")
    return src


class Run:
    def __init__(self, source: str, dest: str, opts: RunOptions, reporter: Reporter) -> None:
        self.source = check_paths(source, dest)
        if opts.links == "store" and not remote_class(dest).CAPABILITIES.symlinks:
            raise ConfigError(f"--links store: {remote_class(dest).NAME} cannot hold symlinks; use --links follow "
                              "to copy what they point to, or --links skip")
        self.dest = dest
        self.opts = opts
        if opts.bwlimit:
            reporter = ThrottledReporter(reporter, Bandwidth(opts.bwlimit))
        self.reporter = reporter
        self.state = StateDir.for_pair(self.source, dest, opts.state_dir)
        if opts.remote.state_dir is None:
            opts.remote.state_dir = self.state.remote_state
        self.trash = trash_root(opts.backup_dir)
        # the trash is never mirrored, listed as drift, or deleted by a plan
        protected = {DEFAULT_TRASH} | set(self._known_trash()) | ({self.trash} if self.trash else set())
        self.excludes = Excludes(opts.exclude, protected=sorted(protected))
        self.trash_runs: dict[str, list[str]] = {}
        self.warnings: list[str] = []
        self.unreadable: list[tuple[str, str]] = []  # files hash_needed could not read
        self.not_stored: list[tuple[str, str]] = []  # what the destination cannot hold (names.py)
        self.collisions: CollisionWatch | None = None
        self.case_moves: list = []  # names.case_renames
        self._remote = None
        self.run_name = time.strftime(RUN_NAME, time.gmtime())
        self.tidy_remote = False  # temp files may be left on the remote
        self._outage: tuple[float, float] | None = None  # first retry, next retry due
        self.started = time.time()
        self._executors: list[tuple[list, Executor]] = []  # (ops, executor) of this run: resume, then plan

    # --- pieces --------------------------------------------------------------

    def _known_trash(self) -> list[str]:
        return known_trash(self.state.path)

    def _remember_trash(self) -> None:
        known = self._known_trash()
        if self.trash and self.trash not in known:
            write_private(self.state.file(TRASH_RECORD), json.dumps(known + [self.trash]).encode())

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.reporter.warn(message)

    @property
    def remote(self):
        if self._remote is None:
            policy = RetryPolicy(self.opts.remote.retry_for, on_retry=self._on_retry)
            self.opts.remote.expected_entries = self._snapshot_entries()
            self.opts.remote.offline = self.opts.offline
            self._remote = RetryingRemote(open_remote(self.dest, self.opts.remote), policy)
        return self._remote

    def network(self):
        """what the run cost on the network where the remote counts it (SFTP's
        NetStats: connections, sessions, round trips waited on), else None."""
        return self._remote.net_stats() if self._remote is not None else None

    def _on_retry(self, what: str, exc: Exception, wait: float) -> None:
        refuse_unknown_host(exc, self.state, self.dest)
        if not getattr(self.reporter, "tty", False):
            self.reporter.warn(retry_message(what, exc, wait))
            return
        now = time.monotonic()
        if self._outage is None or now - self._outage[1] > OUTAGE_GAP:
            self._outage = (now, now)
        self._outage = (self._outage[0], now + wait)
        host = exc.host if isinstance(exc, UnresolvedHost) else urlsplit(display_url(self.dest)).hostname
        why = "no network" if isinstance(exc, UnresolvedHost) else str(exc)
        self.reporter.waiting(f"waiting for {host} ({why}) \u2014 {_clock(now - self._outage[0])} of "
                              f"{_clock(self.opts.remote.retry_for)}; Ctrl-C to stop")

    def _snapshot_entries(self) -> int:
        """about how many entries the last snapshot holds, from its size."""
        try:
            return os.path.getsize(self.state.snapshot) // SNAPSHOT_BYTES_PER_ENTRY
        except OSError:
            return 0

    def previous(self):
        """the last snapshot's rows (entry.row_of), or none."""
        path = self.state.snapshot
        if not os.path.exists(path):
            return []
        try:
            snapshot.verify(path)
            snapshot.read_header(path)
        except (snapshot.CorruptState, OSError) as exc:
            self.warn(f"ignoring the previous snapshot ({exc}); renames are not detected this run, "
                      "nothing is deleted because of it")
            return []
        return snapshot.read_rows(path)

    def _set_aside_if_corrupt(self, fn):
        """a snapshot that passed its checksum but holds rows of the wrong
        shape shows only as it is read: set it aside, then once more without it"""
        try:
            return fn()
        except snapshot.CorruptState as exc:
            aside = self.state.snapshot + ".corrupt"
            os.replace(self.state.snapshot, aside)
            self.warn(f"ignoring the previous snapshot ({exc}); set aside as {aside}. Renames are not "
                      "detected this run, nothing is deleted because of it")
            return fn()

    def pending_journal(self) -> journal_mod.Pending | None:
        try:
            pending = journal_mod.load(self.state.journal)
        except journal_mod.CorruptJournal as exc:
            self.warn(f"ignoring an unreadable journal ({exc}); planning afresh from the remote")
            os.replace(self.state.journal, self.state.journal + ".corrupt")
            self.tidy_remote = True
            return None
        if pending is not None and not self._our_pair(pending.header):
            # a --state-dir shared by two pairs: A->X's operations must never run on Y
            self.warn(f"ignoring a journal left by another pair ({_pair_text(pending.header)}); set aside as "
                      f"{self.state.journal}.other-pair, nothing of it is replayed here")
            os.replace(self.state.journal, self.state.journal + ".other-pair")
            return None
        return pending

    def _our_pair(self, header: dict) -> bool:
        source, dest = header.get("source"), header.get("dest")
        if not isinstance(source, str) or not isinstance(dest, str):
            return False
        try:
            return pair_id(source, dest) == pair_id(self.source, self.dest)
        except ReconcileError:
            return False

    def changes(self, writer: snapshot.SnapshotWriter | None, report: WalkReport) -> Changes:
        caps = self.remote.capabilities
        keep = None
        if self.opts.offline:
            remote_rows = self.previous()
            if not caps.empty_dirs:
                remote_rows = map(row_of, with_implied_dirs(map(entry_of, remote_rows)))
        elif caps.empty_dirs:
            remote_rows, keep = self._listing_rows(), self._keep_remote
        else:
            # bucket-like: unsafe keys are dropped before the folders they imply are added
            remote_rows = map(row_of, with_implied_dirs(self._listing()))
        walked = self._walked(report)
        if caps.case_insensitive:
            self.collisions = CollisionWatch()
            walked = self.collisions.rows(walked)
        if not self.opts.offline:
            walked, remote_rows = walk_while_waiting(walked, remote_rows, self._spill_dir())
        return merge_rows(walked, self.previous(), remote_rows, self.excludes, caps.mtime_precision_ns,
                          self.opts.checksum, record=writer.add_row if writer else None,
                          hasher=self._checksum_hasher if self.opts.checksum else None,
                          perms=bool(self.opts.remote.extra.get("perms")), keep_remote=keep,
                          current_excluded=True, span=caps.mtime_range)

    def _walked(self, report: WalkReport):
        """the source's rows: walked whole, or (walk_only) only those paths,
        the rest taken from the last snapshot; with no snapshot, walked whole"""
        if self.opts.walk_only is not None and os.path.exists(self.state.snapshot):
            previous = self.previous()
            if previous:
                return walk_rows_partial(portable.native(self.source), self.excludes, report, self.opts.links,
                                         self.opts.walk_only, previous)
        return walk_rows(portable.native(self.source), self.excludes, report, self.opts.links)

    def _spill_dir(self) -> str | None:
        """the private state folder, where it exists (a first plan has none yet)"""
        return self.state.path if os.path.isdir(self.state.path) else None

    def _checksum_hasher(self, e: Entry) -> bytes | None:
        try:
            return hash_file(self._local(e), e.size, e.mtime_ns)
        except (SourceChanged, OSError):
            return None  # falls back to size and mtime; the upload re-checks

    def _listing(self):
        self.trash_runs = {}
        try:
            for e in self.remote.list():
                if self._keep_remote(e):
                    yield e
        except NotFound:
            return  # the destination root does not exist yet: everything is new

    def _listing_rows(self):
        """a listing as rows: what _keep_remote checks is left to the merge,
        which asks only about entries that are not plainly the source's own."""
        self.trash_runs = {}
        try:
            rows = iter(self.remote.list_rows())
            first = next(rows, None)
        except NotFound:
            return  # no destination folder yet: everything is to send
        if first is None:
            return
        yield first
        try:
            yield from rows
        except NotFound as exc:
            # a short listing taken for the whole would resend or, with --delete, miss things
            raise Transient(f"the destination changed while it was listed ({exc}); run again") from None

    def _keep_remote(self, e: Entry) -> bool:
        if not is_safe_path(e.path):
            self.warn(f"ignoring a remote entry with an unsafe name: {e.path!r}")
            return False
        if self.trash and is_inside(e.path, self.trash):
            self._note_trash(e)
        return True

    def _note_trash(self, e: Entry) -> None:
        rest = e.path[len(self.trash) + 1:]
        if not rest:
            return
        run, _, inner = rest.partition("/")
        files = self.trash_runs.setdefault(run, [])
        if inner and e.kind != DIR:
            files.append(inner)

    def _plan(self, changes: Changes, tag: str) -> Plan:
        plan = make_plan(changes, self.remote.capabilities, self.opts.delete, tag,
                         perms=bool(self.opts.remote.extra.get("perms")))
        plan.ops[:0] = self.case_moves  # folders renamed in case only, before what goes into them
        if self.trash:
            keep_copies(plan, f"{self.trash}/{self.run_name}")
            if self.opts.backup_keep_days is not None:
                cutoff = time.strftime(RUN_NAME, time.gmtime(time.time() - self.opts.backup_keep_days * 86400))
                prune_trash(plan, self.trash_runs, cutoff, self.trash)
        if self._name_encoding():
            for op in plan.ops:
                stored = to_stored(op.to or op.path)
                op.stored = stored if stored != (op.to or op.path) else None
        return plan

    def leave_out_unstorable(self, changes: Changes) -> None:
        """names the destination cannot hold, case collisions, files over its
        size limit: each left out with one warning saying why (names.py)."""
        caps = self.remote.capabilities
        groups = self.collisions.groups.values() if self.collisions else []
        for path, message in refusals(changes, caps, self._name_encoding(), groups):
            self.not_stored.append((path, message))
            self.warn(message)
        for message in clamp_warnings(changes, caps.mtime_range, caps.fs_type) if caps.mtime_range else []:
            self.warn(message)
        self.case_moves = case_renames(changes, caps)

    def _name_encoding(self) -> bool:
        """--name-encoding, where the destination can store names so (local
        folders and USB disks; elsewhere names are stored as they are)."""
        return bool(self.opts.remote.extra.get("name_encoding")) and self.remote.capabilities.name_encoding

    def hash_needed(self, changes: Changes) -> dict[str, bytes | None]:
        """Hash what the plan needs to find moves and touches (plan.needs_hash); the other
        files to send are hashed as they are sent. A file that cannot be read
        or keeps changing is left out of this run and its remote copy left alone."""
        caps = self.remote.capabilities
        todo = needs_hash(changes, caps.mtime_precision_ns, touch=caps.set_mtime)
        results = self._hash_files(todo, warn=True)
        for e in changes.needed.values():
            if e.kind == FILE and e.hash is None and e.path not in results and not os.access(self._local(e), os.R_OK):
                results[e.path] = None
                if os.path.lexists(self._local(e)):
                    self._unreadable(e.path, os.strerror(errno.EACCES))
                # else it vanished since the walk: gone, not an error
        for path, h in results.items():
            if h is None:
                changes.needed.pop(path, None)
                s = changes.stale.get(path)
                if s is not None and s.displaced:
                    del changes.stale[path]
        return results

    def hashes_of_sent(self, plan: Plan, outcome: Outcome) -> dict[str, bytes | None]:
        """for the next snapshot: the hash of each file this run sent, taken
        while it was sent where the remote could, else read now. None (not
        recorded) for a file that changed since."""
        sent = [op.entry for i, op in enumerate(plan.ops) if op.op == "upload" and op.entry is not None
                and outcome.results.get(i, ("",))[0] == "done"]
        hashes: dict[str, bytes | None] = {e.path: e.hash for e in sent if e.hash is not None}
        hashes.update(self._hash_files([e for e in sent if e.hash is None], warn=False))
        return hashes

    def _local(self, e: Entry) -> str:
        return os.path.join(portable.native(self.source), *e.path.split("/"))

    def _hash_files(self, entries: list[Entry], warn: bool) -> dict[str, bytes | None]:
        results: dict[str, bytes | None] = {}

        def one(e: Entry) -> None:
            try:
                e.hash = hash_file(self._local(e), e.size, e.mtime_ns)
                results[e.path] = e.hash
            except FileNotFoundError:
                results[e.path] = None  # vanished since the walk: gone, not an error
            except (SourceChanged, OSError) as exc:
                results[e.path] = None
                if warn and isinstance(exc, OSError):
                    self._unreadable(e.path, exc.strerror or str(exc))
                elif warn:
                    self.warn(f"skipped {e.path}: it changed while it was read; the next run sends it")

        big = [e for e in entries if e.size >= HASH_THREADED_FROM]
        if big:
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(one, big))
        for e in entries:
            if e.size < HASH_THREADED_FROM:
                one(e)
        return results

    def _unreadable(self, path: str, reason: str) -> None:
        self.unreadable.append((path, reason))
        self.warn(f"skipped {path}: {reason}; its remote copy is left as it is")

    def _local_dest(self) -> str | None:
        return local_dest_path(self.dest)

    def guard_destination(self, changes: Changes) -> None:
        if not self.opts.allow_new_destination:
            check_destination(self.state, self.dest, changes.remote_files, self._snapshot_files)

    def _snapshot_files(self) -> int:
        """the files the last complete run left on the destination, by its snapshot."""
        try:
            return sum(1 for row in self.previous() if row[1] == FILE)
        except (snapshot.CorruptState, OSError):
            return 0

    def guard_source_device(self) -> None:
        if self.opts.source_dev is None:
            return
        try:
            now = os.stat(self.source).st_dev
        except OSError:
            now = None
        if now != self.opts.source_dev:
            raise SafetyRefusal(off_disk_message(self.source))

    def guard_reverse(self) -> None:
        if not self.opts.allow_reverse:
            check_reverse(self.state, self.dest)

    def _record_destination(self, changes: Changes, plan: Plan, outcome: Outcome) -> None:
        if outcome.complete:
            files = max(changes.local_files, changes.remote_files - plan.deleted_files)
        else:
            sent = sum(1 for i, op in enumerate(plan.ops)
                       if op.op == "upload" and outcome.results.get(i, ("",))[0] == "done")
            files = changes.remote_files + sent
        try:
            record_destination(self.state, self.source, self.dest, files)
        except OSError as exc:
            self.reporter.warn(f"could not record the destination in {self.state.path}: {exc.strerror}")

    def guard(self, changes: Changes, plan: Plan) -> None:
        self.guard_destination(changes)
        self.guard_source_device()
        if changes.local_files == 0 and changes.local_dirs == 0 and changes.remote_files > 0 \
                and not self.opts.allow_empty_source:
            raise SafetyRefusal(
                f"source {self.source} is empty but the remote holds {changes.remote_files} files "
                "(unmounted disk?); nothing was changed. Pass --allow-empty-source if you mean it")
        deleting = plan.deleted_files
        if self.opts.max_delete is not None:
            if deleting > self.opts.max_delete:
                raise SafetyRefusal(
                    f"the plan deletes {deleting} files, more than --max-delete {self.opts.max_delete}; "
                    "nothing was changed. Check the source, then raise --max-delete")
        elif deleting and deleting * 2 > changes.remote_files:
            raise SafetyRefusal(
                f"the plan deletes {deleting} of the remote's {changes.remote_files} files (more than half); "
                f"nothing was changed. Check the source, then pass --max-delete {deleting} to allow it")

    # --- the two commands ----------------------------------------------------

    def plan(self) -> RunResult:
        self.guard_reverse()
        report = WalkReport()
        changes = self.remote.policy.run(lambda: self._set_aside_if_corrupt(lambda: self.changes(None, report)),
                                         "list")
        self.leave_out_unstorable(changes)
        self.hash_needed(changes)
        plan = self._plan(changes, "0")
        self.guard(changes, plan)
        pending = self.pending_journal()
        result = self._result(plan, report, changes)
        result.pending_journal = len(pending.remaining) if pending else 0
        return result

    def apply(self, executing: Callable[[Plan], AbstractContextManager] = nullcontext) -> RunResult:
        """executing(plan) is entered while the new plan is carried out: the command
        line sizes its progress bar there, since the plan's size is known only then."""
        try:
            return self._apply(executing)
        except KeyboardInterrupt:
            # Ctrl-C: the journal keeps the rest; status and the log say what was done
            self._save_last_run(self._result(Plan(), WalkReport(), Changes()), "interrupted")
            raise
        except OSError as exc:
            if exc.filename and not str(exc.filename).startswith(self.state.path):
                raise
            raise ReconcileError(
                f"cannot write the state folder {self.state.path} ({exc.strerror}); free space there, "
                "fix its permissions or pass --state-dir DIR. Nothing was lost: the next run resumes") from None

    def _apply(self, executing: Callable[[Plan], AbstractContextManager]) -> RunResult:
        self.guard_reverse()
        with RunLock(self.state.lock):
            self.state.remove_stale_temps()
            resumed = self._resume()
            if resumed is not None and resumed.remote_gone:
                report = WalkReport()
                result = self._result(Plan(), report, Changes())
                result.resumed = resumed
                result.resumed_ops = self._executors[0][0]
                result.counted = self._counted()
                return result
            report = WalkReport()
            walk_tmp = self.state.walk_snapshot
            writers: list[snapshot.SnapshotWriter] = []

            def attempt() -> Changes:
                # a retried listing starts the snapshot file afresh
                for w in writers:
                    w.discard()
                report.__init__()
                writers.append(snapshot.SnapshotWriter(self.state.snapshot, {"source": self.source},
                                                       tmp=walk_tmp))
                return self.changes(writers[-1], report)

            try:
                changes = self.remote.policy.run(lambda: self._set_aside_if_corrupt(attempt), "list")
                writers[-1].finish()
                self.leave_out_unstorable(changes)
                hashes = self.hash_needed(changes)
                tag = uuid.uuid4().hex[:8]
                plan = self._plan(changes, tag)
                self.guard(changes, plan)
                with executing(plan):
                    outcome = self._execute(plan, tag)
                self._record_destination(changes, plan, outcome)
                if outcome.complete:
                    self._commit_snapshot(walk_tmp, {**plan.hashes, **hashes, **self.hashes_of_sent(plan, outcome)})
                if outcome.remote_gone is None and self.tidy_remote:
                    self._remove_temp_files()
            finally:
                for w in writers:
                    w.discard()
            result = self._result(plan, report, changes)
            result.outcome, result.resumed = outcome, resumed
            if resumed is not None:
                result.resumed_ops = self._executors[0][0]
            self._save_last_run(result)
            return result

    def _resume(self) -> Outcome | None:
        pending = self.pending_journal()
        if pending is None:
            return None
        n = len(pending.remaining)
        self.reporter.warn(f"resuming an unfinished run: {n} operation{'' if n == 1 else 's'} left")
        j = journal_mod.Journal(self.state.journal)
        j.reopen()
        outcome = self._executor(j, pending.ops).run(pending.ops, pending.remaining, pending.resume)
        if outcome.remote_gone:
            j.close()
        else:
            j.finish()
            self.tidy_remote = True
        return outcome

    def _execute(self, plan: Plan, tag: str) -> Outcome:
        if not plan.ops:
            return Outcome()
        if any(op.backup for op in plan.ops):
            self._check_trash()
        self._remember_trash()
        j = journal_mod.Journal(self.state.journal)
        j.start({"plan_id": tag, "source": self.source, "dest": display_url(self.dest)}, plan.ops)
        outcome = self._executor(j, plan.ops).run(plan.ops, list(range(len(plan.ops))))
        if outcome.remote_gone:
            j.close()  # the next run resumes from it
            return outcome
        j.finish()
        self.tidy_remote = True
        return outcome

    def _check_trash(self) -> None:
        """someone who can write the destination may have made the trash (or
        this run's folder in it, whose name is predictable) a symlink to
        elsewhere: never move anything through it"""
        for path in (self.trash, f"{self.trash}/{self.run_name}"):
            e = self.remote.stat(path)
            if e is not None and e.kind != DIR:
                what = "a symlink" if e.kind == LINK else "not a folder"
                raise SafetyRefusal(
                    f"the trash folder {path} on the destination is {what}; reconcile never moves files "
                    "through it. Nothing was changed: remove it on the destination (or choose another "
                    "--backup-dir), then run again")

    def _executor(self, j: journal_mod.Journal, ops: list) -> Executor:
        # a child process sends half the small files where it can run on a
        # core of its own; not under --bwlimit, which paces this process's sends
        fork = (forked.available() and not self.opts.bwlimit and self.remote.capabilities.fork_safe
                and self.remote.batch_max_size >= 0)
        executor = Executor(self.remote, portable.native(self.source), j, self.reporter, self._transfers(),
                            fork_small=fork)
        self._executors.append((ops, executor))  # what it did is counted even if it is interrupted
        return executor

    def _remove_temp_files(self) -> None:
        """after a killed run or a run that wrote, clear what killed runs left"""
        try:
            n = self.remote.remove_temp_files()
        except Transient as exc:
            self.warn(f"could not clear temporary files on the remote ({exc}); the next run tries again")
            return
        if n:
            self.reporter.warn(f"removed {n} temporary files left by an interrupted run")

    def _transfers(self) -> int:
        return self.opts.remote.transfers or remote_class(self.dest).default_transfers

    def _commit_snapshot(self, walk_tmp: str, hashes: dict[str, bytes | None]) -> None:
        if not hashes:
            os.replace(walk_tmp, self.state.snapshot)
            return
        by_key = {encode_path(p): h for p, h in hashes.items()}
        out = snapshot.SnapshotWriter(self.state.snapshot, {"source": self.source})
        try:
            for row in snapshot.read_rows(walk_tmp):
                path = row_path(row)
                if path in by_key:
                    if by_key[path] is None:
                        continue  # unreadable or unstable: not recorded
                    row = row[:7] + (by_key[path],) + row[8:]
                out.add_row(row)
            out.finish()
            out.commit()
        finally:
            out.discard()
            try:
                os.unlink(walk_tmp)
            except FileNotFoundError:
                pass

    def _result(self, plan: Plan, report: WalkReport, changes: Changes) -> RunResult:
        folders = [(p + "/", reason) for p, _, reason in (u.rpartition(": ") for u in report.unreadable)]
        return RunResult(self.source, display_url(self.dest), plan, report, changes,
                         warnings=self.warnings, unreadable=folders + self.unreadable, started=self.started,
                         not_stored=self.not_stored)

    def _save_last_run(self, result: RunResult, word: str | None = None) -> None:
        """what status and the log report: every operation this run carried
        out, those that finished an interrupted run included."""
        result.ended = time.time()
        outcomes = [(ops, ex.outcome) for ops, ex in self._executors]
        result.counted = self._counted()
        record = {
            "source": result.source, "dest": result.dest, "started": result.started,
            "ended": result.ended, "result": word or exit_word(result),
            "done": sum(o.count("done") for _, o in outcomes),
            "failed": sum(o.count("failed") for _, o in outcomes),
            "bytes": result.counted.sent,
            "bytes_saved": result.counted.saved,
            "resumed": self._executors[0][1].outcome.count("done") if result.resumed_ops else 0,
        }
        try:
            write_private(self.state.last_run, json.dumps(record).encode())
        except OSError as exc:
            self.reporter.warn(f"could not record the run in {self.state.last_run}: {exc.strerror}")

    def _counted(self) -> Counted:
        counted = Counted()
        for ops, executor in self._executors:
            counted.add(ops, executor.outcome)
        return counted

    def close(self) -> None:
        if self._remote is not None:
            self._remote.close()


def _pair_text(header: dict) -> str:
    return f"{header.get('source')!s:.200} -> {header.get('dest')!s:.200}"


def off_disk_message(source: str) -> str:
    return (f"source {source} is no longer on the disk it was on when the watch started (unmounted? the "
            "bare mount-point folder is left); nothing is synced from it and nothing deleted until the "
            "disk is back. Mount it again, or restart reconcile watch if the folder moved for good")


def exit_word(result: RunResult) -> str:
    """partial when an operation is left over or a source file could not be read:
    a file that was not backed up is never reported as success."""
    if result.unreadable or result.not_stored:
        return "partial"
    for o in (result.resumed, result.outcome):
        if o is not None and not o.complete:
            return "partial"
    return "ok"
