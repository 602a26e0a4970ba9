"""The only reader of the source tree: a sorted stream of entries.

Children of each directory are ordered by entry.sort_key, and a directory's
subtree follows it directly, so the whole stream is in sort_key order.
walk_rows() gives rows (entry.row_of), the form the merge reads; walk()
gives Entries.
"""

from __future__ import annotations

import os
import stat as st
from dataclasses import dataclass, field
import heapq
from bisect import bisect_left
from itertools import chain
from operator import itemgetter
from typing import Iterable, Iterator

from reconcile import portable
from reconcile.entry import DIR, FILE, LINK, Entry, decode_path, encode_path, entry_of, is_inside
from reconcile.excludes import TEMP_MARK_B, Excludes


@dataclass
class WalkReport:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    symlinks_skipped: int = 0
    specials_skipped: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    links_not_followed: list[str] = field(default_factory=list)  # loops, dangling, outside the root


def walk(root: str, excludes: Excludes, report: WalkReport, links: str = "skip") -> Iterator[Entry]:
    for row in walk_rows(root, excludes, report, links):
        yield entry_of(row)


def walk_rows(root: str, excludes: Excludes, report: WalkReport, links: str = "skip") -> Iterator[tuple]:
    # rows are handed over a run at a time: no Python frame resumes per row
    return chain.from_iterable(_Walker(root, excludes, report, links).runs())


S_ISREG = st.S_ISREG
S_ISLNK = st.S_ISLNK
S_IFMT, S_IFREG, S_IFDIR, S_IFLNK = 0o170000, st.S_IFREG, st.S_IFDIR, st.S_IFLNK  # the file type bits
# stat relative to an open folder: the kernel resolves one name, not the whole path
FD_STAT = portable.DIR_FD


class Listing:
    """one folder's sorted rows, the positions of its subfolders, and how far
    a depth-first walk has got in it."""

    __slots__ = ("rows", "dirs", "start", "k")

    def __init__(self, rows: list[tuple], dirs: list[int]) -> None:
        self.rows, self.dirs, self.start, self.k = rows, dirs, 0, 0

    @classmethod
    def sorted(cls, rows: list[tuple], dir_keys: list[bytes]) -> "Listing":
        rows.sort()  # keys are unique within a folder: only they are compared
        return cls(rows, sorted(bisect_left(rows, (key,)) for key in dir_keys))

    def next_dir(self) -> int | None:
        if self.k == len(self.dirs):
            return None
        self.k += 1
        return self.dirs[self.k - 1]


class _Walker:
    def __init__(self, root: str, excludes: Excludes, report: WalkReport, links: str) -> None:
        self.root = root
        self.root_b = os.fsencode(root)
        self.root_real = os.path.realpath(root)
        self.excludes = excludes
        self.report = report
        self.links = links

    def runs(self, start: bytes = b"", ancestors: list | None = None) -> Iterator[list[tuple]]:
        """the rows in order, as runs of one folder's listing that end where
        a subfolder's own runs come in: depth first, with a stack of open
        listings instead of a generator per level. start: a folder's key
        (ending in /) to walk below it only."""
        if ancestors is None:
            top = os.stat(self.root)
            ancestors = [(top.st_dev, top.st_ino)]  # of the open folders, for --links follow loops
        try:
            stack = [self.read_dir(os.path.join(self.root_b, start[:-1]) if start else self.root_b, start,
                                   ancestors)]
        except OSError as exc:
            if start:
                ancestors.pop()
                self.report.unreadable.append(f"{decode_path(start[:-1])}: {exc.strerror}")
                yield [(start, DIR, 0, None, 0, 0, 0, None, None, exc.strerror or "unreadable")]
            else:
                self.report.unreadable.append(f".: {exc.strerror}")
            return
        while stack:
            listing = stack[-1]
            j = listing.next_dir()
            if j is None:
                stack.pop()
                ancestors.pop()
                yield listing.rows[listing.start:]
                continue
            yield listing.rows[listing.start:j + 1]
            listing.start = j + 1
            key, dev, inode = listing.rows[j][0], listing.rows[j][5], listing.rows[j][4]
            ancestors.append((dev, inode))
            try:
                stack.append(self.read_dir(os.path.join(self.root_b, key[:-1]), key, ancestors))
            except OSError as exc:
                ancestors.pop()
                self.report.unreadable.append(f"{decode_path(key[:-1])}: {exc.strerror}")
                yield [(key, DIR, 0, None, 0, 0, 0, None, None, exc.strerror or "unreadable")]

    def path_rows(self, key: bytes) -> Iterator[tuple]:
        """the rows of one path (no trailing /): its own, then, for a
        folder, everything below it in order; nothing if it is gone or excluded"""
        parent, _, name = key.rpartition(b"/")
        prefix = parent + b"/" if parent else b""
        ancestors = self._ancestors(parent)
        if ancestors is None:
            return
        try:
            rows, dirs = self.read_children(os.path.join(self.root_b, parent) if parent else self.root_b,
                                            [name], None, prefix, ancestors)
        except OSError:
            return  # gone since the event: the snapshot's rows go with it
        yield from rows
        if dirs:
            ancestors.append((rows[0][5], rows[0][4]))
            yield from chain.from_iterable(self.runs(dirs[0], ancestors))

    def own_row(self, row: tuple) -> tuple:
        """a folder's row read again (the snapshot's if it cannot be)"""
        parent, _, name = row[0][:-1].rpartition(b"/")
        try:
            rows, _ = self.read_children(os.path.join(self.root_b, parent) if parent else self.root_b, [name],
                                         None, parent + b"/" if parent else b"", [])
        except OSError:
            return row
        if rows and rows[0][0] == row[0]:
            self.report.dirs -= 1  # counted once, as the snapshot's row was not
            return rows[0]
        return row

    def _ancestors(self, parent: bytes) -> list | None:
        """(dev, inode) of the root and each folder down to parent, for
        --links follow's loop check; None when one is gone or not a folder"""
        out = []
        path = self.root_b
        for part in [b""] + (parent.split(b"/") if parent else []):
            path = os.path.join(path, part) if part else path
            try:
                s = os.stat(path)
            except OSError:
                return None
            if not st.S_ISDIR(s.st_mode):
                return None
            out.append((s.st_dev, s.st_ino))
        return out

    def read_dir(self, abs_dir: bytes, prefix: bytes, ancestors: list) -> Listing:
        """one folder, sorted; OSError when it cannot be read."""
        if not FD_STAT:
            rows, dirs = self.read_children(abs_dir, os.listdir(abs_dir), None, prefix, ancestors)
        else:
            fd = os.open(abs_dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                rows, dirs = self.read_children(abs_dir, os.listdir(abs_dir), fd, prefix, ancestors)
            finally:
                os.close(fd)
        return Listing.sorted(rows, dirs)

    def read_children(self, abs_dir: bytes, names: list[bytes], fd: int | None, prefix: bytes,
                      ancestors: list) -> tuple[list, list]:
        """the rows of one folder, unsorted, and the keys of its subfolders."""
        # the hot loop of every run: kept flat on purpose
        rows = []
        dirs = []
        append = rows.append
        excludes = self.excludes
        patterns = excludes.has_patterns
        protected = excludes.protected_names(prefix)
        lstat = os.lstat
        base = b"" if fd is not None else os.path.join(abs_dir, b"")
        nbytes = others = 0
        for name in names:
            if TEMP_MARK_B in name or (protected and name in protected):
                continue
            try:
                s = lstat(base + name, dir_fd=fd)
            except FileNotFoundError:
                continue  # vanished while we looked; the next run sees it settled
            mode = s.st_mode
            if mode & S_IFMT == S_IFREG:  # S_ISREG without a call
                if patterns and excludes.excluded(decode_path(prefix + name), False):
                    continue
                size = s.st_size
                nbytes += size
                append((prefix + name, FILE, size, s.st_mtime_ns, s.st_ino, s.st_dev, mode, None, None, None))
                continue
            row = self.other(prefix + name, s, ancestors)
            if row is not None:
                append(row)
                others += 1
                if row[1] == DIR:
                    dirs.append(row[0])
        self.report.files += len(rows) - others  # other() counts what it adds
        self.report.bytes += nbytes
        return rows, dirs

    def other(self, key: bytes, s: os.stat_result, ancestors: list) -> tuple | None:
        """the row of anything but a plain file: folders, symlinks, specials."""
        path = decode_path(key)
        full = os.path.join(self.root_b, key)
        if S_ISLNK(s.st_mode):
            s = self.link(full, path, s, ancestors)
            if s is None:
                return None
        mode = s.st_mode
        if S_ISLNK(mode):
            if self.excludes.excluded(path, False):
                return None
            target = os.fsdecode(os.readlink(full))
            return (key, LINK, 0, s.st_mtime_ns, s.st_ino, s.st_dev, mode, None, target, None)
        if st.S_ISDIR(mode):
            if self.excludes.excluded(path, True):
                return None
            self.report.dirs += 1
            return (key + b"/", DIR, 0, s.st_mtime_ns, s.st_ino, s.st_dev, mode, None, None, None)
        if S_ISREG(mode):  # a followed symlink to a file
            if self.excludes.excluded(path, False):
                return None
            self.report.files += 1
            self.report.bytes += s.st_size
            return (key, FILE, s.st_size, s.st_mtime_ns, s.st_ino, s.st_dev, mode, None, None, None)
        self.report.specials_skipped.append(path)
        return None

    def link(self, full: bytes, path: str, lst: os.stat_result, ancestors: list) -> os.stat_result | None:
        """what a symlink stands for under the --links policy, or None to skip it"""
        if self.links == "skip":
            self.report.symlinks_skipped += 1
            return None
        if self.links == "store":
            return lst
        try:
            target = os.stat(full)
        except OSError:
            self.report.links_not_followed.append(f"{path}: dangling")
            return None
        if not is_inside(os.fsdecode(os.path.realpath(full)), self.root_real):
            self.report.links_not_followed.append(f"{path}: points outside the source")
            return None
        if st.S_ISDIR(target.st_mode) and (target.st_dev, target.st_ino) in ancestors:
            self.report.links_not_followed.append(f"{path}: a loop")
            return None
        return target


def walk_rows_partial(root: str, excludes: Excludes, report: WalkReport, links: str, paths: list[str],
                      previous: Iterable[tuple]) -> Iterator[tuple]:
    """walk_rows() for a tree where only `paths` may have changed since the
    snapshot whose rows are `previous`: each path (a file, or a folder and
    all below it) is read from the disk, every other row is the snapshot's.
    The caller vouches for the rest (reconcile watch: file events)."""
    walker = _Walker(root, excludes, report, links)
    keys = [encode_path(p) for p in paths]
    exact = frozenset(keys)
    below = tuple(k + b"/" for k in keys)
    # the folders above a changed path changed too (their mtime): their own rows are read again
    above = {k[:i + 1] for k in keys for i in range(len(k)) if k[i:i + 1] == b"/"}
    kept = (walker.own_row(row) if row[0] in above else row
            for row in previous if not (row[0] in exact or row[0].startswith(below)))
    return heapq.merge(kept, *(walker.path_rows(k) for k in keys), key=itemgetter(0))


def holds_more_than_files(root: str) -> bool:
    """a symlink, or a folder with no file anywhere below it, under root"""
    for path, dirs, files in os.walk(root, topdown=False):
        if any(os.path.islink(os.path.join(path, n)) for n in dirs + files):
            return True
        if not files and not dirs:
            return True
    return False
