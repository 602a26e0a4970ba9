"""What a run is given (RunOptions) and what it gives back (RunResult), and
the word the log and status use for a result."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from reconcile.apply import Counted, Outcome
from reconcile.diff import Changes
from reconcile.known import Known
from reconcile.plan import Plan
from reconcile.remotes.base import RemoteOptions
from reconcile.walk import WalkReport


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
    # reconcile watch: what its last clean run left (known.py); a run of walk_only
    # paths is planned on it instead of a listing where nothing is in doubt
    known: Known | None = None


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


def exit_word(result: RunResult) -> str:
    """partial when an operation is left over or a source file could not be read:
    a file that was not backed up is never reported as success."""
    if result.unreadable or result.not_stored:
        return "partial"
    for o in (result.resumed, result.outcome):
        if o is not None and not o.complete:
            return "partial"
    return "ok"
