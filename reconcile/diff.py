"""The streaming merge of three sorted streams: the source walk, the previous
snapshot and the remote listing. Memory follows the number of changes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Iterator

from reconcile.entry import DIR, FILE, LINK, Entry, entry_key, entry_of, is_inside, parent_of, row_of
from reconcile.excludes import Excludes


def file_changed(old: Entry, new: Entry, precision_ns: int = 1, checksum: bool = False,
                 perms: bool = False, span: tuple[int, int] | None = None) -> bool:
    """The one rule for "changed": kind, size, then content hash (in checksum
    mode, when both sides know it) or mtime at the coarser side's precision.
    An unknown mtime (a bucket filled by another tool) compares by size only.
    span: the times old's side can hold; new's time is compared as stored there.
    """
    if old.kind != new.kind:
        return True
    if old.kind == DIR:
        return False
    if old.kind == LINK:
        return old.target != new.target
    if old.size != new.size:
        return True
    if perms and old.mode and new.mode and (old.mode & 0o7777) != (new.mode & 0o7777):
        return True
    if checksum and old.hash is not None and new.hash is not None:
        return old.hash != new.hash
    if old.mtime_ns is None or new.mtime_ns is None:
        return False
    return not same_mtime(old.mtime_ns, new.mtime_ns if span is None else clamp_mtime(new.mtime_ns, span),
                          precision_ns)


def same_mtime(a: int, b: int, precision_ns: int) -> bool:
    """two mtimes agree when the coarser side would store them alike: exFAT
    (1 s), NTFS (100 ns) and SFTP (1 s) truncate to their step, so both fall
    in one step; FAT (the one 2 s file system) may round up or down, so there
    they agree within one step either way."""
    if a == b or precision_ns == 1:
        return a == b
    if precision_ns >= 2_000_000_000:
        return abs(a - b) < precision_ns
    return a // precision_ns == b // precision_ns


DAY_NS = 86_400 * 1_000_000_000


def clamp_mtime(t: int, span: tuple[int, int]) -> int:
    """the time a disk that holds only span (FAT, exFAT: 1980 to 2107) stores
    for t: a day inside either end, since FAT keeps local time and so its
    first and last day depend on the time zone."""
    lo, hi = span[0] + DAY_NS, span[1] - DAY_NS
    return lo if t < lo else hi if t > hi else t


def same_stat(prev: Entry, cur: Entry) -> bool:
    """the local file is the one we hashed last time: its hash can be reused."""
    return (prev.kind == cur.kind and prev.size == cur.size and prev.mtime_ns == cur.mtime_ns
            and prev.inode == cur.inode)


@dataclass
class Stale:
    """Something the remote holds at a path where the source has nothing, or
    something else. prev is what the last snapshot had there, if anything."""

    remote: Entry
    prev: Entry | None
    displaced: bool = False  # the source has a changed version at the same path
    orig: str = ""  # its path on the remote when the plan was made

    def __post_init__(self) -> None:
        self.orig = self.orig or self.remote.path


@dataclass
class Changes:
    needed: dict[str, Entry] = field(default_factory=dict)  # local entries the remote lacks
    stale: dict[str, Stale] = field(default_factory=dict)  # remote entries the source lacks
    local_files: int = 0
    local_dirs: int = 0
    remote_files: int = 0
    unchanged: int = 0
    skipped_unreadable: int = 0  # remote entries left alone under unreadable dirs


def with_implied_dirs(entries: Iterable[Entry]) -> Iterator[Entry]:
    """Give a listing without directories (S3) the directory entries its keys
    imply, in the same order, so that every remote looks alike to the merge."""
    open_dirs: list[str] = []
    for e in entries:
        parent = parent_of(e.path)
        while open_dirs and not is_inside(parent, open_dirs[-1]):
            open_dirs.pop()
        if parent and not (open_dirs and open_dirs[-1] == parent):
            base = open_dirs[-1] if open_dirs else ""
            rest = parent[len(base) + 1:] if base else parent
            for part in rest.split("/"):
                base = f"{base}/{part}" if base else part
                open_dirs.append(base)
                yield Entry(base, DIR)
        if e.kind == DIR:
            open_dirs.append(e.path)
        yield e


def _with_known_hash(r: Entry, p: Entry | None) -> Entry:
    """the remote's content hash: its own (S3), else the one we recorded when
    we sent it, if the remote still looks like what we sent."""
    if r.hash is None and p is not None and p.hash is not None and p.kind == r.kind and p.size == r.size:
        return replace(r, hash=p.hash)
    return r


class SortedStream:
    """one sorted stream of entries, with its head and sort key peeked."""

    __slots__ = ("_it", "head", "key")

    def __init__(self, it: Iterable[Entry]) -> None:
        self._it = iter(it)
        self.advance()

    def advance(self) -> None:
        self.head = next(self._it, None)
        self.key = entry_key(self.head) if self.head is not None else None

    def take(self, key: bytes) -> Entry | None:
        if self.key == key:
            e = self.head
            self.advance()
            return e
        return None


def merge(
    current: Iterable[Entry],
    previous: Iterable[Entry],
    remote: Iterable[Entry],
    excludes: Excludes,
    precision_ns: int = 1,
    checksum: bool = False,
    record: Callable[[Entry], None] | None = None,
    hasher: Callable[[Entry], bytes | None] | None = None,
    perms: bool = False,
) -> Changes:
    """merge_rows() for streams of Entries; record() receives Entries."""
    return merge_rows(map(row_of, current), map(row_of, previous), map(row_of, remote), excludes,
                      precision_ns, checksum, (lambda row: record(entry_of(row))) if record else None,
                      hasher, perms)


def merge_rows(
    current: Iterable[tuple],
    previous: Iterable[tuple],
    remote: Iterable[tuple],
    excludes: Excludes,
    precision_ns: int = 1,
    checksum: bool = False,
    record: Callable[[tuple], None] | None = None,
    hasher: Callable[[Entry], bytes | None] | None = None,
    perms: bool = False,
    keep_remote: Callable[[Entry], bool] | None = None,
    current_excluded: bool = False,
    span: tuple[int, int] | None = None,
) -> Changes:
    """Walk the three sorted streams of rows (entry.row_of) in step. record()
    receives every source row, with the previous hash carried over when the
    file is unchanged locally, in order: that is the next snapshot.

    Most keys are the same unchanged file or folder on both sides: that case
    is settled on the rows alone; any other key goes through _merge_key with
    Entries, where every rule lives. keep_remote(e) sees every remote entry
    but those settled so (each the twin of a source entry, so neither
    unsafe nor excluded) and may drop it. current_excluded: the current
    stream went through these excludes already (walk_rows), so its twins on
    the remote need no second look. span: the times the remote can hold
    (file_changed)."""
    changes = Changes()
    cur, prev, rem = iter(current), iter(previous), iter(remote)
    c, p, r = next(cur, None), next(prev, None), next(rem, None)
    quick = not checksum and not perms and hasher is None
    excluded = None if current_excluded else excludes.excluded_key
    unreadable: list[str | None] = [None]  # a folder we could not read, while inside it
    files = dirs = 0  # unchanged, settled on the rows
    inside_lo, inside_hi = (span[0] + DAY_NS, span[1] - DAY_NS) if span is not None else (0, 0)
    while True:
        # the quick path: the same unchanged file or folder at the same key on both sides
        while quick and c is not None and r is not None and unreadable[0] is None:
            key, kind = c[0], c[1]
            if key != r[0] or kind != r[1] or c[9] is not None or (p is not None and p[0] < key):
                break
            if kind == FILE:
                cm, rm = c[3], r[3]
                if span is not None and cm is not None and not inside_lo <= cm <= inside_hi:
                    cm = clamp_mtime(cm, span)
                if c[2] != r[2] or cm is None or rm is None or (
                        cm != rm and not same_mtime(cm, rm, precision_ns)):
                    break
                if cm != rm and p is not None and p[0] == key and p[1] == FILE and p[3] != c[3]:
                    break  # changed since the last run within the remote's mtime step: _changed_in_step
                if excluded is not None and excluded(key, False):
                    break
                files += 1
            elif kind == DIR:
                if excluded is not None and excluded(key, True):
                    break
                dirs += 1
            else:
                break
            if p is not None and p[0] == key:
                if record is not None:
                    record(_carry_hash(c, p))
                p = next(prev, None)
            elif record is not None:
                record(c)
            c, r = next(cur, None), next(rem, None)
        if c is None and p is None and r is None:
            break
        key = min(x[0] for x in (c, p, r) if x is not None)
        ce = pe = re = None
        if c is not None and c[0] == key:
            ce, c = entry_of(c), next(cur, None)
        if p is not None and p[0] == key:
            pe, p = entry_of(p), next(prev, None)
        if r is not None and r[0] == key:
            re, r = entry_of(r), next(rem, None)
            if keep_remote is not None and not keep_remote(re):
                re = None
        if ce is None and pe is None and re is None:
            continue
        _merge_key(ce, pe, re, changes, unreadable, excludes, precision_ns, checksum, record, hasher, perms, span)
    changes.local_files += files
    changes.local_dirs += dirs
    changes.remote_files += files
    changes.unchanged += files + dirs
    return changes


def _changed_in_step(p: Entry | None, c: Entry, r: Entry) -> bool:
    """the source file's mtime moved since the last run, though the remote's
    coarser step (exFAT 1 s, NTFS 100 ns, SFTP 1 s) holds the old and the
    new alike: a same-size edit to an older time, or a swap of two files,
    lands in the step the remote copy's time is in. The exact time the
    snapshot recorded tells it; the file is sent once, then the snapshot
    holds its new time."""
    return (p is not None and c.kind == FILE and p.kind == FILE and c.mtime_ns is not None
            and p.mtime_ns is not None and c.mtime_ns != p.mtime_ns and c.mtime_ns != r.mtime_ns)


def _carry_hash(c: tuple, p: tuple) -> tuple:
    """the source row with the previous hash, when the file is the one we hashed."""
    if c[1] == FILE and p[1] == FILE and c[2] == p[2] and c[3] == p[3] and c[4] == p[4]:
        return c[:7] + (p[7],) + c[8:]
    return c


def _merge_key(c: Entry | None, p: Entry | None, r: Entry | None, changes: Changes,
               unreadable: list[str | None], excludes: Excludes, precision_ns: int, checksum: bool,
               record: Callable[[tuple], None] | None, hasher: Callable[[Entry], bytes | None] | None,
               perms: bool, span: tuple[int, int] | None = None) -> None:
    """every rule for one key, on Entries."""
    path = (c or p or r).path
    if unreadable[0] is not None:
        if is_inside(path, unreadable[0]) and path != unreadable[0]:
            # a directory we could not read: leave its remote copy alone and
            # keep what we knew of it.
            if p is not None and record:
                record(row_of(p))
            if r is not None:
                changes.skipped_unreadable += 1
            return
        unreadable[0] = None  # the stream is sorted: nothing later lies inside it
    if r is not None and excludes.excluded(r.path, r.kind == DIR):
        r = None
    if r is not None and r.kind == FILE:
        changes.remote_files += 1
    if c is not None and c.error is not None:
        unreadable[0] = c.path
        if r is not None:
            changes.skipped_unreadable += 1
        if p is not None and record:
            record(row_of(p))
        return
    if c is not None:
        if c.kind == FILE:
            changes.local_files += 1
        elif c.kind == DIR:
            changes.local_dirs += 1
        if p is not None and c.kind == FILE and same_stat(p, c):
            c.hash = p.hash
        if hasher is not None and c.kind == FILE and r is not None:
            # --checksum: mtimes can't be trusted, so read every file
            c.hash = hasher(c)
        if record:
            record(row_of(c))
    if c is not None and r is not None and not file_changed(
            _with_known_hash(r, p) if checksum else r, c, precision_ns, checksum, perms, span) \
            and not (not checksum and _changed_in_step(p, c, r)):
        changes.unchanged += 1
        return
    if c is not None:
        changes.needed[c.path] = c
    if r is not None:
        changes.stale[r.path] = Stale(r, p, displaced=c is not None)
