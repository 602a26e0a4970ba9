"""What changed: the source walked (whole, or only the paths a watch marked),
the last snapshot and the destination's listing, merged by diff.merge_rows."""

from __future__ import annotations

import os
from functools import partial

from reconcile import portable, snapshot
from reconcile.diff import Changes, merge_rows, with_implied_dirs
from reconcile.entry import DIR, Entry, entry_of, is_inside, is_safe_path, row_of
from reconcile.errors import ConfigError, NotFound, SourceChanged, Transient
from reconcile.names import CollisionWatch, unstorable
from reconcile.spool import walk_while_waiting
from reconcile.walk import WalkReport, walk_rows, walk_rows_partial


class ChangeFinder:
    """Run's walk + snapshot + listing -> Changes."""

    def changes(self, writer: snapshot.SnapshotWriter | None, report: WalkReport) -> Changes:
        caps = self.remote.capabilities
        keep = None
        if self.opts.offline:
            if not os.path.exists(self.state.snapshot):  # the remote is unknown, not empty
                raise ConfigError("plan --offline plans against the snapshot of the last complete run, and this "
                                  "pair has none (no run of it has completed yet); run `reconcile plan` without "
                                  "--offline to look at the destination")
            remote_rows = self._storable(self.previous(), caps)
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
                          hasher=partial(self._checksum_hasher, self._plan_map_store()) if self.opts.checksum else None,
                          perms=bool(self.opts.remote.extra.get("perms")), keep_remote=keep,
                          current_excluded=True, span=caps.mtime_range)

    def _storable(self, rows, caps):
        """--offline: the last snapshot (the source as it was) stands for the remote,
        but what the destination cannot hold never reached it: left out here, it is
        reported as not stored, as a plan that connects reports it"""
        if not (caps.windows_names or caps.max_file_size is not None or caps.utf8_names):
            return rows
        return _held(rows, caps, self._name_encoding())

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

    def _checksum_hasher(self, mapped, e: Entry) -> bytes | None:
        """--checksum: every file's hash, a large one's block map on that pass too (content_hash)"""
        try:
            return self.content_hash(e, mapped)
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

    def _local(self, e: Entry) -> str:
        return os.path.join(portable.native(self.source), *e.path.split("/"))


def _held(rows, caps, encoding: bool):
    """rows without those the destination cannot hold (names.unstorable) and what is inside them"""
    refused = None
    for row in rows:
        e = entry_of(row)
        if refused is not None and is_inside(e.path, refused):
            continue
        if unstorable(e, caps, encoding) is None:
            yield row
        elif e.kind == DIR:
            refused = e.path
