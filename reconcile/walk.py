"""The only reader of the source tree: a sorted stream of entries.

Children of each directory are ordered by entry.sort_key, and a directory's
subtree follows it directly, so the whole stream is in sort_key order.
"""

from __future__ import annotations

import os
import stat as st
from dataclasses import dataclass, field
from typing import Iterator

from reconcile.entry import DIR, FILE, LINK, Entry, is_inside
from reconcile.excludes import Excludes


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
    walker = _Walker(root, excludes, report, links)
    top = os.stat(root)
    yield from walker.walk_dir(os.fsencode(root), "", ((top.st_dev, top.st_ino),))


S_ISREG = st.S_ISREG
S_ISLNK = st.S_ISLNK


def _first(item: tuple) -> bytes:
    return item[0]


class _Walker:
    def __init__(self, root: str, excludes: Excludes, report: WalkReport, links: str) -> None:
        self.root_real = os.path.realpath(root)
        self.excludes = excludes
        self.report = report
        self.links = links

    def walk_dir(self, abs_dir: bytes, rel: str, ancestors: tuple) -> Iterator[Entry]:
        try:
            with os.scandir(abs_dir) as it:
                children = self.read_children(it, rel, ancestors)
        except OSError as exc:
            self.report.unreadable.append(f"{rel or '.'}: {exc.strerror}")
            if rel:
                yield Entry(rel, DIR, error=exc.strerror or "unreadable")
            return
        for entry, name in children:
            yield entry
            if entry.kind == DIR and entry.error is None:
                yield from self.walk_dir(os.path.join(abs_dir, name), entry.path,
                                         ancestors + ((entry.dev, entry.inode),))

    def read_children(self, it, rel: str, ancestors: tuple) -> list[tuple[Entry, bytes]]:
        # the hot loop of every run: kept flat on purpose
        children = []
        prefix = rel + "/" if rel else ""
        excluded = self.excludes.excluded if self.excludes else None
        report = self.report
        for d in it:
            path = prefix + os.fsdecode(d.name)
            try:
                s = d.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # vanished while we looked; the next run sees it settled
            mode = s.st_mode
            if S_ISREG(mode):
                if excluded is not None and excluded(path, False):
                    continue
                report.files += 1
                report.bytes += s.st_size
                children.append((d.name, Entry(path, FILE, s.st_size, s.st_mtime_ns, s.st_ino, s.st_dev, mode),
                                 d.name))
                continue
            if S_ISLNK(mode):
                s = self.link(d, path, s, ancestors)
                if s is None:
                    continue
            entry = self.entry(path, s)
            if entry is None:
                continue
            if entry.kind == LINK:
                entry.target = os.fsdecode(os.readlink(d.path))
            key = d.name + b"/" if entry.kind == DIR else d.name
            children.append((key, entry, d.name))
        children.sort(key=_first)
        return [(e, n) for _, e, n in children]

    def link(self, d, path: str, lst: os.stat_result, ancestors: tuple) -> os.stat_result | None:
        """what a symlink stands for under the --links policy, or None to skip it"""
        if self.links == "skip":
            self.report.symlinks_skipped += 1
            return None
        if self.links == "store":
            return lst
        try:
            target = os.stat(d.path)
        except OSError:
            self.report.links_not_followed.append(f"{path}: dangling")
            return None
        if not is_inside(os.fsdecode(os.path.realpath(d.path)), self.root_real):
            self.report.links_not_followed.append(f"{path}: points outside the source")
            return None
        if st.S_ISDIR(target.st_mode) and (target.st_dev, target.st_ino) in ancestors:
            self.report.links_not_followed.append(f"{path}: a loop")
            return None
        return target

    def entry(self, path: str, s: os.stat_result) -> Entry | None:
        mode = s.st_mode
        if st.S_ISLNK(mode):
            if self.excludes.excluded(path, False):
                return None
            return Entry(path, LINK, 0, s.st_mtime_ns, s.st_ino, s.st_dev, mode)
        if st.S_ISDIR(mode):
            if self.excludes.excluded(path, True):
                return None
            self.report.dirs += 1
            return Entry(path, DIR, 0, s.st_mtime_ns, s.st_ino, s.st_dev, mode)
        if st.S_ISREG(mode):
            if self.excludes.excluded(path, False):
                return None
            self.report.files += 1
            self.report.bytes += s.st_size
            return Entry(path, FILE, s.st_size, s.st_mtime_ns, s.st_ino, s.st_dev, mode)
        self.report.specials_skipped.append(path)
        return None
