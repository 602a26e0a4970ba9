"""Carrying out a plan under the journal: an interrupted run's journal first,
then the new plan, each by an apply.Executor; temp files left by killed
runs cleared afterwards."""

from __future__ import annotations

from reconcile import forked, portable
from reconcile import journal as journal_mod
from reconcile.apply import Executor, Outcome
from reconcile.errors import Transient
from reconcile.plan import Plan
from reconcile.remotes import remote_class
from reconcile.statedir import display_url


class Execution:
    """Run's executors."""

    def _resume(self) -> Outcome | None:
        pending = self.pending_journal()
        if pending is None:
            return None
        self.guard_resume()
        n = len(pending.remaining)
        if n:  # else it was stopped after its last operation: nothing to say
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
            self.reporter.warn(f"removed {n} temporary file{'' if n == 1 else 's'} left by an interrupted run "
                               "or a failed upload")

    def _transfers(self) -> int:
        return self.opts.remote.transfers or remote_class(self.dest).default_transfers
