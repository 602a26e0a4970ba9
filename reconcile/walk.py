"""The only reader of the source tree: a sorted stream of entries.

Children of each directory are ordered by entry.sort_key, and a directory's
subtree follows it directly, so the whole stream is in sort_key order.
"""

from __future__ import annotations

import os
import stat as st
from dataclasses import dataclass, field
from typing import Iterator

from reconcile.entry import DIR, FILE, LINK, Entry
from reconcile.excludes import Excludes


@dataclass
class WalkReport:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    symlinks_skipped: int = 0
    specials_skipped: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def walk(root: str, excludes: Excludes, report: WalkReport, links: str = "skip") -> Iterator[Entry]:
    yield from _walk_dir(os.fsencode(root), "", excludes, report, links)


def _walk_dir(abs_dir: bytes, rel: str, excludes: Excludes, report: WalkReport, links: str) -> Iterator[Entry]:
    try:
        with os.scandir(abs_dir) as it:
            children = _read_children(it, rel, excludes, report, links)
    except OSError as exc:
        report.unreadable.append(f"{rel or '.'}: {exc.strerror}")
        if rel:
            yield Entry(rel, DIR, error=exc.strerror or "unreadable")
        return
    for key, entry, name in children:
        yield entry
        if entry.kind == DIR and entry.error is None:
            yield from _walk_dir(os.path.join(abs_dir, name), entry.path, excludes, report, links)


def _read_children(it, rel: str, excludes: Excludes, report: WalkReport, links: str) -> list:
    children = []
    for d in it:
        name = os.fsdecode(d.name)
        path = f"{rel}/{name}" if rel else name
        try:
            s = d.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # vanished while we looked; the next run sees it settled
        mode = s.st_mode
        if st.S_ISLNK(mode):
            if links == "skip":
                report.symlinks_skipped += 1
                continue
            entry = Entry(path, LINK, 0, s.st_mtime_ns, s.st_ino, s.st_dev, mode, target=os.readlink(d.path).decode("utf-8", "surrogateescape") if isinstance(d.path, bytes) else os.readlink(d.path))
        elif st.S_ISDIR(mode):
            if excludes.excluded(path, True):
                continue
            report.dirs += 1
            entry = Entry(path, DIR, 0, s.st_mtime_ns, s.st_ino, s.st_dev, mode)
        elif st.S_ISREG(mode):
            if excludes.excluded(path, False):
                continue
            report.files += 1
            report.bytes += s.st_size
            entry = Entry(path, FILE, s.st_size, s.st_mtime_ns, s.st_ino, s.st_dev, mode)
        else:
            report.specials_skipped.append(path)
            continue
        if entry.kind == LINK and excludes.excluded(path, False):
            continue
        key = d.name + b"/" if entry.kind == DIR else d.name
        children.append((key, entry, d.name))
    children.sort(key=lambda c: c[0])
    return children
