"""restore's survey: each remote entry against the local folder (identical,
missing, differing, blocked by a local file or folder), the hash each file
must have, and the partial temp file a killed restore left for it."""

from __future__ import annotations

import os
import stat
from typing import Callable

from reconcile import safepath
from reconcile.diff import file_changed
from reconcile.entry import DIR, FILE, Entry
from reconcile.errors import ReconcileError
from reconcile.hashing import hash_file
from reconcile.restore_model import RESTORE_TEMP, Item, Survey, in_folder_of, is_temp_of, local_path, shown

# --- known hashes --------------------------------------------------------------

def snapshot_hashes(state_dir: str, wanted: set[str], warn: Callable[[str], None]) -> dict[str, Entry]:
    """entries with a hash from the pair's snapshot, for files the remote has none for"""
    from reconcile import snapshot

    path = os.path.join(os.path.abspath(os.path.expanduser(state_dir)), "snapshot.msgpack")
    if not os.path.exists(path):
        warn(f"no snapshot in {state_dir}; files without a hash on the remote are checked by size only")
        return {}
    try:
        snapshot.verify(path)
        snapshot.read_header(path)
        return {e.path: e for e in snapshot.read_entries(path)
                if e.kind == FILE and e.hash is not None and e.path in wanted}
    except (snapshot.CorruptState, OSError, ValueError) as exc:
        warn(f"ignoring the snapshot in {state_dir} ({exc}); files are checked by size only")
        return {}


def expected_hash(e: Entry, snap: Entry | None, precision: int) -> bytes | None:
    if e.hash is not None:
        return e.hash
    # the snapshot vouches only for the very version the remote lists; with no
    # remote mtime (another tool wrote it) the size alone cannot tell
    if snap is not None and e.mtime_ns is not None and not file_changed(snap, e, precision):
        return snap.hash
    return None


# --- comparing with the local folder -------------------------------------------

def survey(pairs: list[tuple[str, Entry]], root: str, snaps: dict[str, Entry], precision: int,
           overwrite: bool) -> Survey:
    s = Survey()
    temps = TempIndex(root)
    for rel, e in pairs:
        if e.kind == DIR:
            _survey_dir(s, rel, e, root)
        elif e.kind == FILE:
            _survey_file(s, rel, e, root, expected_hash(e, snaps.get(rel), precision), precision, overwrite, temps)
        else:
            s.links += 1
    return s


def _survey_dir(s: Survey, rel: str, e: Entry, root: str) -> None:
    if is_real_dir(local_path(root, rel)):
        return
    way = file_in_way(root, rel)
    if way is None:
        s.dirs.append(rel)
    else:
        s.blocked.append(blocked(rel, e, "file", way_message(rel, way)))


def _survey_file(s: Survey, rel: str, e: Entry, root: str, expect: bytes | None, precision: int,
                 overwrite: bool, temps: "TempIndex") -> None:
    target = local_path(root, rel)
    try:
        st = lstat_below(root, rel)
    except FileNotFoundError:
        s.todo.append(_item(rel, e, "missing", expect, root, temps))
        return
    except (NotADirectoryError, safepath.SymlinkInPath):  # a local file or link where the remote has a folder
        head = rel.rpartition("/")[0]
        way = file_in_way(root, head) or head
        s.blocked.append(blocked(rel, e, "file", way_message(rel, way)))
        return
    if stat.S_ISDIR(st.st_mode):
        s.blocked.append(blocked(rel, e, "folder", "a local folder is in the way; move it, then run again"))
        return
    if stat.S_ISREG(st.st_mode) and _same(e, st, target, expect, precision):
        s.identical += 1
    elif overwrite:
        s.todo.append(_item(rel, e, "differs", expect, root, temps))
    else:
        s.differs.append(rel)


def blocked(rel: str, e: Entry, by: str, error: str) -> Item:
    """a path the restore cannot write: reported, counted as failed, the rest goes on"""
    item = Item(rel, e.path, e, "blocked", None, result="failed", error=error)
    item.blocked_by = by
    return item


def file_in_way(root: str, rel: str) -> str | None:
    """the first part of rel that exists locally but is not a folder (a
    symlink to a folder included: restore never writes through one)"""
    parts = rel.split("/") if rel else []
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        path = local_path(root, sub)
        if not is_real_dir(path):
            return sub if os.path.lexists(path) else None
    return None


def is_real_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def lstat_below(root: str, rel: str) -> os.stat_result:
    """lstat of root/rel, never through a symlinked folder (SymlinkInPath)"""
    with safepath.open_parent(root, rel) as p:
        return os.lstat(p.target, dir_fd=p.fd)


def way_message(rel: str, way: str) -> str:
    if way == rel:
        return "a local file (or symlink) stands where the remote has this folder; move it, then run again"
    return (f"the local file (or symlink) {shown(way)} stands where the remote has a folder; "
            "move it, then run again")


def _same(e: Entry, st: os.stat_result, target: str, expect: bytes | None, precision: int) -> bool:
    if st.st_size != e.size:
        return False
    # size alone proves nothing: an unknown remote mtime needs the hash
    local = Entry(e.path, FILE, st.st_size, st.st_mtime_ns)
    if e.mtime_ns is not None and not file_changed(e, local, precision):
        return True
    if expect is None:
        return False
    try:
        return hash_file(target) == expect  # same bytes, another mtime
    except (OSError, ReconcileError):
        return False


def _item(rel: str, e: Entry, reason: str, expect: bytes | None, root: str, temps: "TempIndex") -> Item:
    item = Item(rel, e.path, e, reason, expect)
    for name in temps.of(rel, e):
        try:
            st = lstat_below(root, in_folder_of(rel, name))
        except OSError:
            continue
        if ours(st) and st.st_size <= e.size:
            item.temp, item.partial = name, st.st_size
            break
    return item


class TempIndex:
    """restore's temp names in each folder, listed once (never through a symlink)"""

    def __init__(self, root: str) -> None:
        self.root = root
        self._names: dict[str, list[str]] = {}

    def of(self, rel: str, e: Entry) -> list[str]:
        head = rel.rpartition("/")[0]
        if head not in self._names:
            self._names[head] = self._list(head)
        return [n for n in self._names[head] if is_temp_of(n, rel, e)]

    def _list(self, head: str) -> list[str]:
        try:
            d = safepath.open_dir(self.root, head)
        except OSError:
            return []
        try:
            return [n for n in os.listdir(d) if RESTORE_TEMP.match(n)]
        except OSError:
            return []
        finally:
            if isinstance(d, int):
                os.close(d)


def ours(st: os.stat_result) -> bool:
    """a temp file a killed restore of ours left, and nothing planted: a
    regular file we own with no other name (a hard link to someone's file)"""
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_uid == getattr(os, "geteuid", lambda: st.st_uid)()
