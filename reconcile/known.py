"""What reconcile watch knows between two of its runs, so that the run a few
changed paths start costs what changed, not the size of the tree.

After a clean run the remote holds what the snapshot says (the source's
rows) plus the entries that run left there that the source lacks (no
--delete): `extras`. The snapshot's sparse index (SnapshotWriter.index: the
key and byte offset of a row every ROWS_AT_ONCE rows) lets the next run read
only the blocks that hold the dirty paths and the folders above them, merge
those rows against the same rows standing for the remote (no listing), and
write the new snapshot by copying every other block's bytes as they are.

Anything in doubt gives no Subset and the run is an ordinary one that lists
the remote: the snapshot is not the one the last clean run of this process
wrote (another run of the pair came between), a journal, a folder above a
dirty path missing from the snapshot. The watcher's start-up run and its
periodic full rescans always list; a run planned so that finds the remote
not as expected (an operation skipped or failed) asks for a listing at once
(`recheck`).
"""

from __future__ import annotations

import heapq
import os
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from operator import itemgetter

from typing import Callable

import msgpack

from reconcile import snapshot
from reconcile.diff import Changes, merge_rows
from reconcile.entry import DIR, FILE, encode_path, row_of
from reconcile.excludes import Excludes
from reconcile.walk import WalkReport, walk_rows_partial

MAX_EXTRAS = 10_000  # remote entries the source lacks, kept; past that every run lists
COPY_BLOCKS = 64  # blocks of the old snapshot copied per read (a few MB)


def file_id(path: str) -> tuple | None:
    try:
        s = os.stat(path)
    except OSError:
        return None
    return (s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns)


@dataclass
class Known:
    """filled by a clean run of the watcher, forgotten as each run starts.
    The index and the extras are kept packed, each one bytes object: kept as
    the run made them, their small objects each held one of the allocator's
    arenas of that run (+27 MB idle after a run over 100,000 folders)"""

    snapshot_id: tuple | None = None  # file_id of the snapshot it describes
    packed_index: bytes = b""  # [(key, offset)] of the snapshot's blocks
    files: int = 0  # the snapshot's files and folders
    dirs: int = 0
    packed_extras: bytes = b""  # rows of the remote entries the source lacks
    recheck: bool = False  # the last run was planned on this and the remote was not as expected
    used: bool = False  # the last run was planned on this, without a listing

    @property
    def index(self) -> list[tuple[bytes, int]]:
        return [tuple(x) for x in _unpack(self.packed_index)]

    @property
    def extras(self) -> dict[bytes, tuple]:
        return {row[0]: row for row in _unpack(self.packed_extras)}

    def forget(self) -> None:
        self.snapshot_id, self.packed_index, self.packed_extras = None, b"", b""

    def remember(self, snapshot_path: str, index: list[tuple[bytes, int]] | None, files: int, dirs: int,
                 extras: dict[bytes, tuple]) -> None:
        if not index or len(extras) > MAX_EXTRAS:
            self.forget()
            return
        self.snapshot_id = file_id(snapshot_path)
        self.packed_index, self.packed_extras = _pack(index), _pack(list(extras.values()))
        self.files, self.dirs = files, dirs

    def after_run(self, snapshot_path: str, subset: Subset | None, changes: Changes, ops: list,
                  index: list[tuple[bytes, int]] | None, recheck: bool) -> None:
        """index: the new snapshot's, after a clean run; None after any other.
        recheck: the run was planned on this and the remote was not as expected"""
        self.recheck = recheck
        if index is None:
            self.forget()
            return
        extras = subset.extras_after(changes.stale, ops) if subset is not None else extras_after(changes.stale, ops)
        self.remember(snapshot_path, index, changes.local_files, changes.local_dirs, extras)

    def subset(self, snapshot_path: str, paths: list[str]) -> Subset | None:
        if self.snapshot_id is None or not self.packed_index or file_id(snapshot_path) != self.snapshot_id:
            return None
        sub = Subset(self, snapshot_path, paths)
        try:
            return sub if sub.read() else None
        except (OSError, snapshot.CorruptState):
            return None  # the run that lists reads it again, and says what is wrong with it


def _pack(items: list) -> bytes:
    return msgpack.packb(items, use_bin_type=True, unicode_errors="surrogateescape") if items else b""


def _unpack(packed: bytes) -> tuple:
    if not packed:
        return ()
    return msgpack.unpackb(packed, use_list=False, raw=False, unicode_errors="surrogateescape")


def extras_after(stale: dict, ops: list) -> dict[bytes, tuple]:
    """the remote entries the source lacks that a complete run left in place:
    stale ones no delete or move took away"""
    gone = {op.path for op in ops if op.op in ("delete", "move")}
    out = {}
    for s in stale.values():
        if s.displaced:
            continue
        path = s.remote.path
        parts = path.split("/")
        if any("/".join(parts[:i]) in gone for i in range(1, len(parts) + 1)):
            continue
        row = row_of(s.remote)
        out[row[0]] = row
    return out


class Subset:
    """the snapshot's rows of the dirty paths and of the folders above them,
    read from the blocks that hold them, and what the rest adds up to"""

    def __init__(self, known: Known, path: str, paths: list[str]) -> None:
        self.path, self.paths = path, paths
        keys = [encode_path(p) for p in paths]
        self.exact = frozenset(keys)
        self.below = tuple(k + b"/" for k in keys)
        self.above = {k[:i + 1] for k in keys for i in range(len(k)) if k[i:i + 1] == b"/"}
        self.index = known.index  # the Known is forgotten while this run goes on
        self.firsts = [k for k, _ in self.index]
        self.files, self.dirs = known.files, known.dirs
        self.extras_before = known.extras
        self.rows: list[tuple] = []  # inside: the dirty paths' and the folders above them
        self.kept: list[list[tuple]] = []  # per run of blocks, the rows outside
        self.runs: list[tuple[int, int]] = []  # (first, last) block of each run read

    def inside(self, key: bytes) -> bool:
        return key in self.exact or key in self.above or key.startswith(self.below)

    def _blocks(self) -> list[int]:
        firsts = self.firsts
        blocks = {max(bisect_right(firsts, k) - 1, 0) for k in self.exact | self.above}
        for b in self.below:
            lo = max(bisect_right(firsts, b) - 1, 0)
            hi = max(bisect_left(firsts, b[:-1] + b"0") - 1, 0)  # '0' follows '/': past every key below b
            blocks.update(range(lo, hi + 1))
        return sorted(blocks)

    def _span(self, lo: int, hi: int) -> tuple[int, int]:
        index = self.index
        end = index[hi + 1][1] if hi + 1 < len(index) else os.path.getsize(self.path) - snapshot.FOOTER.size
        return index[lo][1], end

    def read(self) -> bool:
        """False when in doubt: a folder above a dirty path is not in the snapshot"""
        runs: list[tuple[int, int]] = []
        for b in self._blocks():
            if runs and runs[-1][1] == b - 1:
                runs[-1] = (runs[-1][0], b)
            else:
                runs.append((b, b))
        with open(self.path, "rb") as f:
            for lo, hi in runs:
                start, end = self._span(lo, hi)
                f.seek(start)
                unpacker = snapshot.new_unpacker()
                unpacker.feed(f.read(end - start))
                rows = snapshot.unpack_rows(unpacker)
                self.rows += [r for r in rows if self.inside(r[0])]
                self.kept.append([r for r in rows if not self.inside(r[0])])
        self.runs = runs
        found = {r[0] for r in self.rows if r[1] == DIR}
        return self.above <= found

    def remote_rows(self) -> list[tuple]:
        """what the remote holds here, as the last clean run left it: the
        snapshot's rows (hashes are what the source had; the remote's own
        listing has none) and the extras"""
        mine = {r[0] for r in self.rows}
        extras = sorted((r for k, r in self.extras_before.items() if self.inside(k) and k not in mine),
                        key=itemgetter(0))
        held = [r[:7] + (None,) + r[8:] for r in self.rows]
        return list(heapq.merge(held, extras, key=itemgetter(0)))

    def changes(self, root: str, excludes: Excludes, links: str, report: WalkReport,
                record: Callable[[tuple], None], precision_ns: int, span: tuple[int, int] | None) -> Changes:
        """the merge of these rows only: walked again, the snapshot's, and the
        remote's as the last clean run left it; the counts of the whole tree"""
        walked = walk_rows_partial(root, excludes, report, links, self.paths, self.rows)
        changes = merge_rows(walked, self.rows, self.remote_rows(), excludes, precision_ns, record=record,
                             current_excluded=True, span=span)
        self.count_the_rest(changes)
        return changes

    def count_the_rest(self, changes: Changes) -> None:
        """the merge saw only these rows: add what the rest of the tree holds,
        which the guards (empty source, share deleted) weigh"""
        files = sum(1 for r in self.rows if r[1] == FILE)
        dirs = sum(1 for r in self.rows if r[1] == DIR)
        extra_files = sum(1 for k, r in self.extras_before.items() if r[1] == FILE and not self.inside(k))
        changes.local_files += self.files - files
        changes.local_dirs += self.dirs - dirs
        changes.remote_files += self.files - files + extra_files
        changes.unchanged += self.files + self.dirs - files - dirs

    def extras_after(self, stale: dict, ops: list) -> dict[bytes, tuple]:
        out = {k: r for k, r in self.extras_before.items() if not self.inside(k)}
        out.update(extras_after(stale, ops))
        return out

    def write(self, recorded: list[tuple]) -> list[tuple[bytes, int]] | None:
        """the new snapshot: the old one's bytes where nothing changed, the
        blocks read here packed again with the recorded rows in place of
        those inside; its index"""
        header = snapshot.read_header(self.path)
        header.pop("version", None)
        out = snapshot.SnapshotWriter(self.path, header)
        try:
            with open(self.path, "rb") as f:
                at, r = 0, 0
                for (lo, hi), kept in zip(self.runs, self.kept):
                    self._copy(f, out, at, lo)
                    start = self.firsts[lo] if lo else b""
                    end = self.firsts[hi + 1] if hi + 1 < len(self.firsts) else None
                    mine = []
                    while r < len(recorded) and (end is None or recorded[r][0] < end):
                        if recorded[r][0] < start:
                            raise ValueError("a row outside the blocks read")
                        mine.append(recorded[r])
                        r += 1
                    for row in heapq.merge(kept, mine, key=itemgetter(0)):
                        out.add_row(row)
                    at = hi + 1
                self._copy(f, out, at, len(self.firsts))
                if r != len(recorded):
                    raise ValueError("a row outside the blocks read")
            out.finish()
            out.commit()
            return out.index
        finally:
            out.discard()

    def _copy(self, f, out: snapshot.SnapshotWriter, a: int, b: int) -> None:
        """blocks a..b-1 of the old snapshot, as they are"""
        index = self.index
        for lo in range(a, b, COPY_BLOCKS):
            hi = min(lo + COPY_BLOCKS, b) - 1
            start, end = self._span(lo, hi)
            f.seek(start)
            out.copy(f.read(end - start), [(k, off - start) for k, off in index[lo:hi + 1]])
