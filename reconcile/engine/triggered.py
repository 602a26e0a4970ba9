"""reconcile watch's triggered runs: planned on what the watcher's last clean
run left (known.py) instead of a listing, where nothing is in doubt."""

from __future__ import annotations

from typing import Callable

from reconcile import portable, snapshot
from reconcile.apply import Outcome
from reconcile.diff import Changes
from reconcile.errors import ReconcileError
from reconcile.known import Subset
from reconcile.plan import Plan
from reconcile.walk import WalkReport
from reconcile.engine.options import RunResult, exit_word


class Triggered:
    def _known_subset(self, resumed: Outcome | None) -> Subset | None:
        """the dirty paths' rows, to be planned against the remote as the last
        clean run of this watcher left it instead of a listing; None when
        anything is in doubt. Forgotten until this run ends clean."""
        known = self.opts.known
        if known is None:
            return None
        caps = self.remote.capabilities
        plain = (self.opts.walk_only is not None and resumed is None and not self.tidy_remote
                 and not self.opts.offline and not self.opts.checksum and not self.opts.remote.extra.get("perms")
                 and not self._name_encoding() and caps.empty_dirs and not caps.case_insensitive)
        subset = known.subset(self.state.snapshot, self.opts.walk_only) if plain else None
        known.forget()
        known.used, known.recheck = subset is not None, False
        return subset

    def _changes_known(self, subset: Subset, record: Callable[[tuple], None], report: WalkReport) -> Changes:
        caps = self.remote.capabilities
        return subset.changes(portable.native(self.source), self.excludes, self.opts.links, report, record,
                              caps.mtime_precision_ns, caps.mtime_range)

    def _commit_subset(self, subset: Subset, recorded: list[tuple], hashes: dict[str, bytes | None]) -> list:
        try:
            return subset.write(list(snapshot.with_hashes(recorded, hashes)))
        except (ValueError, OSError, snapshot.CorruptState) as exc:
            # the run fails: its paths stay dirty, and the next run lists and walks them again
            raise ReconcileError(f"could not update the snapshot {self.state.snapshot} ({exc}); "
                                 "the next run lists the remote and walks the changed paths again") from None

    def _remember(self, subset: Subset | None, changes: Changes, plan: Plan, result: RunResult,
                  index: list | None) -> None:
        """after a clean run (every operation done as planned, nothing skipped), what the
        next triggered run may be planned on; else a listing, at once if this
        run was planned without one and the remote answered"""
        if self.opts.known is None or self.opts.offline:
            return
        outcome = result.outcome
        clean = (outcome is not None and outcome.complete and not outcome.count("skipped")
                 and not outcome.unexpected and exit_word(result) == "ok")
        recheck = subset is not None and not clean and outcome is not None and outcome.remote_gone is None
        self.opts.known.after_run(self.state.snapshot, subset, changes, plan.ops, index if clean else None,
                                  recheck)
