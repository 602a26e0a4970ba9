"""The pair's state folder as a run reads and writes it: the last snapshot,
an unfinished journal (only ever this pair's), the trash record, the new
snapshot and the last-run record."""

from __future__ import annotations

import json
import os
import time

from reconcile import journal as journal_mod
from reconcile import snapshot
from reconcile.apply import Counted
from reconcile.blockmap import BlockStore, large_files
from reconcile.entry import DIR
from reconcile.errors import ReconcileError
from reconcile.statedir import SNAPSHOT_BYTES_PER_ENTRY, pair_id
from reconcile.statefile import write_private
from reconcile.trash import TRASH_RECORD, known_trash
from reconcile.engine.options import RunResult, exit_word



class RunState:
    """Run's state folder (self.state), its snapshot, journal and records."""

    def _known_trash(self) -> list[str]:
        return known_trash(self.state.path)

    def _remember_trash(self) -> None:
        known = self._known_trash()
        if self.trash and self.trash not in known:
            write_private(self.state.file(TRASH_RECORD), json.dumps(known + [self.trash]).encode())

    def _snapshot_entries(self) -> int:
        """about how many entries the last snapshot holds, from its size."""
        try:
            return os.path.getsize(self.state.snapshot) // SNAPSHOT_BYTES_PER_ENTRY
        except OSError:
            return 0

    def _snapshot_folders(self) -> list[bytes]:
        """the folders the last snapshot names (keys, in listing order): where
        a listing may look ahead. Read whole when asked (the file is not held
        open while the run replaces it); a fault in the file ends the list
        there (the merge reads it again and says what is wrong)."""
        folders: list[bytes] = []
        try:
            for row in snapshot.read_rows(self.state.snapshot):
                if row[1] == DIR:
                    folders.append(row[0][:-1])
        except Exception:  # a hint, not data: nothing is decided on it
            pass
        return folders

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

    def _commit_snapshot(self, walk_tmp: str, hashes: dict[str, bytes | None],
                         walked_index: list | None) -> list | None:
        """the walk's snapshot in place, with the hashes this run learnt; its index"""
        if not hashes:
            os.replace(walk_tmp, self.state.snapshot)
            return walked_index
        out = snapshot.SnapshotWriter(self.state.snapshot, {"source": self.source})
        try:
            for row in snapshot.with_hashes(snapshot.read_rows(walk_tmp), hashes):
                out.add_row(row)
            out.finish()
            out.commit()
            return out.index
        finally:
            out.discard()
            try:
                os.unlink(walk_tmp)
            except FileNotFoundError:
                pass

    def _commit_partial_snapshot(self, walk_tmp: str, hashes: dict[str, bytes | None], plan, outcome) -> None:
        """after a run that ended partial with the remote still there: the walk's
        rows, with the last snapshot's for what is in doubt (engine/partial.py)"""
        from reconcile.engine.partial import doubtful, outside, partial_rows

        doubt = doubtful(plan, outcome)
        learnt = outside(hashes, doubt)
        out = snapshot.SnapshotWriter(self.state.snapshot, {"source": self.source})
        try:
            walked = snapshot.with_hashes(snapshot.read_rows(walk_tmp), learnt)
            for row in partial_rows(walked, self.previous(), doubt):
                out.add_row(row)
            out.finish()
            out.commit()
        finally:
            out.discard()

    def _prune_block_records(self) -> None:
        """the block records (delta transfer) of files the snapshot no longer
        holds as large files go; read only where there are records"""
        store = BlockStore(self.opts.remote.state_dir)
        try:
            store.prune(lambda: large_files(self.state.snapshot, store.min_size))
        except (snapshot.CorruptState, OSError):
            pass  # only records of files gone are left: the next complete run tries again

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


def _pair_text(header: dict) -> str:
    return f"{header.get('source')!s:.200} -> {header.get('dest')!s:.200}"

