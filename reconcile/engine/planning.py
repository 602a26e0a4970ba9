"""From changes to a plan: what the destination cannot hold left out (names.py),
the plan made, the trash's copies and pruning added, names encoded."""

from __future__ import annotations

import time

from reconcile.diff import Changes
from reconcile.names import case_renames, clamp_warnings, refusals, to_stored
from reconcile.plan import Plan, keep_copies, make_plan, prune_trash

RUN_NAME = "%Y-%m-%dT%H%M%SZ"  # trash run folders: UTC, sortable, no colons


class Planning:
    """Run's plan."""

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
