"""What a run refuses before it changes anything: a missing, unreadable or
overlapping source, a new or reversed destination, an empty source, too
many deletes, a trash folder that is a link."""

from __future__ import annotations

import os

from reconcile import snapshot
from reconcile.apply import Outcome
from reconcile.diff import Changes
from reconcile.entry import DIR, FILE, LINK, is_inside
from reconcile.errors import ConfigError, SafetyRefusal
from reconcile.pairs import check_dest_parent, check_destination, check_reverse, local_dest_path, record_destination
from reconcile.plan import Plan
from reconcile.remotes import dest_kind


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


def _holds_anything(folder: str) -> bool:
    try:
        with os.scandir(folder) as it:
            return next(it, None) is not None
    except OSError:
        return False


def off_disk_message(source: str) -> str:
    return (f"source {source} is no longer on the disk it was on when the watch started (unmounted? the "
            "bare mount-point folder is left); nothing is synced from it and nothing deleted until the "
            "disk is back. Mount it again, or restart reconcile watch if the folder moved for good")


class Guards:
    """Run's guards."""

    def _local_dest(self) -> str | None:
        return local_dest_path(self.dest)

    def guard_destination(self, changes: Changes) -> None:
        if not self.opts.allow_new_destination:
            check_destination(self.state, self.dest, changes.remote_files, self._snapshot_files)

    def guard_resume(self) -> None:
        """before an interrupted run is finished, which comes before any listing:
        a local destination whose disk is gone (its folder missing or empty, on
        another file system, or its parents missing) is refused as a plan would
        be, instead of the rest of the run being written under the mount point"""
        local = self._local_dest()
        if local is None:
            return  # SFTP and S3: no disk to be unmounted under a mount point; a missing root is made as ever
        if not self.opts.allow_new_destination:
            check_destination(self.state, self.dest, int(_holds_anything(local)), self._snapshot_files)
        check_dest_parent(self.dest)

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
        self.guard_destination(changes)  # first: a disk that held files and is gone is exit 4
        check_dest_parent(self.dest)
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
