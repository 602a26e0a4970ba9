"""One run: lock, resume, walk + merge, plan, guards, apply, commit state.
Run's parts are the mixins beside this module; this one holds the order."""

from __future__ import annotations

import time
import uuid
from contextlib import AbstractContextManager, nullcontext
from typing import Callable
from urllib.parse import urlsplit

from reconcile import snapshot
from reconcile.apply import Executor, HushableReporter, Reporter
from reconcile.bwlimit import Bandwidth, ThrottledReporter
from reconcile.diff import Changes
from reconcile.errors import ConfigError, ReconcileError, UnresolvedHost
from reconcile.excludes import Excludes
from reconcile.lock import RunLock
from reconcile.names import CollisionWatch
from reconcile.pairs import refuse_unknown_host
from reconcile.plan import Plan
from reconcile.remotes import open_remote, remote_class
from reconcile.remotes.retry import RetryingRemote, RetryPolicy, retry_message
from reconcile.statedir import StateDir, display_url
from reconcile.trash import DEFAULT_TRASH, trash_root
from reconcile.walk import WalkReport
from reconcile.engine.changes import ChangeFinder
from reconcile.engine.execute import Execution
from reconcile.engine.guards import Guards, check_paths
from reconcile.engine.hashes import Hashes
from reconcile.engine.options import RunOptions, RunResult
from reconcile.engine.planning import RUN_NAME, Planning
from reconcile.engine.state import RunState
from reconcile.engine.triggered import Triggered

OUTAGE_GAP = 5.0  # seconds past a retry's due time after which the next one starts a new wait


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


class Run(RunState, ChangeFinder, Planning, Hashes, Guards, Execution, Triggered):
    def __init__(self, source: str, dest: str, opts: RunOptions, reporter: Reporter) -> None:
        self.source = check_paths(source, dest)
        if opts.links == "store" and not remote_class(dest).CAPABILITIES.symlinks:
            raise ConfigError(f"--links store: {remote_class(dest).NAME} cannot hold symlinks; use --links follow "
                              "to copy what they point to, or --links skip")
        self.dest = dest
        self.opts = opts
        if opts.bwlimit:
            reporter = ThrottledReporter(reporter, Bandwidth(opts.bwlimit))
        self.reporter = HushableReporter(reporter)
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

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.reporter.warn(message)

    @property
    def remote(self):
        if self._remote is None:
            policy = RetryPolicy(self.opts.remote.retry_for, on_retry=self._on_retry)
            self.opts.remote.expected_entries = self._snapshot_entries()
            self.opts.remote.known_folders = self._snapshot_folders
            self.opts.remote.offline = self.opts.offline
            self._remote = RetryingRemote(open_remote(self.dest, self.opts.remote), policy)
        return self._remote

    def network(self):
        """what the run cost on the network where the remote counts it (SFTP's
        NetStats: connections, sessions, round trips waited on), else None."""
        return self._remote.net_stats() if self._remote is not None else None

    def delta_note(self) -> str | None:
        """-v: how large files that changed travel to this remote, once it is open"""
        return self._remote.delta_note() if self._remote is not None else None

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
        self.opts.remote.sends = True
        try:
            return self._apply(executing)
        except KeyboardInterrupt:
            self.reporter.hush()  # what the threads meet as their connections close is this Ctrl-C
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
            subset = self._known_subset(resumed)  # reconcile watch: no listing where nothing is in doubt
            recorded: list[tuple] = []  # a subset's new rows

            def attempt() -> Changes:
                # a retried listing starts the snapshot file afresh
                for w in writers:
                    w.discard()
                report.__init__()
                writers.append(snapshot.SnapshotWriter(self.state.snapshot, {"source": self.source},
                                                       tmp=walk_tmp))
                return self.changes(writers[-1], report)

            try:
                if subset is None:
                    changes = self.remote.policy.run(lambda: self._set_aside_if_corrupt(attempt), "list")
                    writers[-1].finish()
                else:
                    changes = self._changes_known(subset, recorded.append, report)
                self.leave_out_unstorable(changes)
                hashes = self.hash_needed(changes)
                tag = uuid.uuid4().hex[:8]
                plan = self._plan(changes, tag)
                self.guard(changes, plan)
                with executing(plan):
                    outcome = self._execute(plan, tag)
                self._record_destination(changes, plan, outcome)
                index = None
                if outcome.complete:
                    learnt = {**plan.hashes, **hashes, **self.hashes_of_sent(plan, outcome)}
                    index = (self._commit_snapshot(walk_tmp, learnt, writers[-1].index) if subset is None
                             else self._commit_subset(subset, recorded, learnt))
                    if subset is None:  # it reads the whole snapshot: a subset's run leaves it to full runs
                        self._prune_block_records()
                elif outcome.remote_gone is None and subset is None:
                    # partial, the remote still there: renames are found next time too (engine/partial.py)
                    learnt = {**plan.hashes, **hashes, **self.hashes_of_sent(plan, outcome)}
                    self._commit_partial_snapshot(walk_tmp, learnt, plan, outcome)
                if outcome.remote_gone is None and self.tidy_remote and subset is None:
                    self._remove_temp_files()  # a subset's run starts clean: no journal, nothing to tidy
            finally:
                for w in writers:
                    w.discard()
            result = self._result(plan, report, changes)
            result.outcome, result.resumed = outcome, resumed
            self._remember(subset, changes, plan, result, index)
            if resumed is not None:
                result.resumed_ops = self._executors[0][0]
            self._save_last_run(result)
            return result

    def _result(self, plan: Plan, report: WalkReport, changes: Changes) -> RunResult:
        folders = [(p + "/", reason) for p, _, reason in (u.rpartition(": ") for u in report.unreadable)]
        return RunResult(self.source, display_url(self.dest), plan, report, changes,
                         warnings=self.warnings, unreadable=folders + self.unreadable, started=self.started,
                         not_stored=self.not_stored)

    def close(self) -> None:
        if self._remote is not None:
            self._remote.close()
