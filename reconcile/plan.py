"""Changes + the remote's capabilities -> an ordered Plan. Pure: no I/O.

Steps: pair files that moved (by inode, else by size and xxh3), lift groups
of file moves into directory moves, then order everything so that swaps,
cycles, type changes and nested moves come out right.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from reconcile.diff import Changes, Stale, file_changed
from reconcile.entry import DIR, FILE, LINK, TEMP_MARK, Entry, is_inside, parent_of
from reconcile.remotes.base import Capabilities


@dataclass
class Op:
    op: str  # upload | touch | mkdir | link | move | delete
    path: str  # the remote path acted on; for a move, its source
    kind: str = FILE
    to: str | None = None  # move target
    size: int = 0
    reason: str = ""  # upload: new | changed; delete: deleted | replaced; move: moved | temp
    # touch: the remote holds this content already (same xxh3); only its mtime is set
    files: list[str] = field(default_factory=list)  # dir move / dir delete: remote files inside, relative
    dirs: list[str] = field(default_factory=list)  # dir delete: subdirs inside, relative, deepest first
    entry: Entry | None = None  # upload/link: the local entry
    backup: str | None = None  # where the remote's old version goes first (--backup-dir)
    overwrites: bool = False  # the target holds an older version that this replaces
    stored: str | None = None  # the path as the destination stores it, where --name-encoding maps it

    def to_json(self) -> dict:
        d = self._json()
        if self.backup:
            d["backup"] = self.backup
        if self.stored:
            d["stored"] = self.stored
        return d

    def _json(self) -> dict:
        if self.op == "move":
            return {"op": "move", "kind": "dir" if self.kind == DIR else "file", "from": self.path,
                    "to": self.to, "files": len(self.files) if self.kind == DIR else 1}
        if self.op == "delete":
            d = {"op": "delete", "kind": "dir" if self.kind == DIR else "file", "path": self.path}
            if self.kind == DIR:
                d["files"] = len(self.files)
            if self.reason in ("replaced", "prune"):
                d["reason"] = self.reason
            return d
        if self.op == "upload":
            return {"op": "upload", "path": self.path, "size": self.size, "reason": self.reason}
        if self.op == "touch":
            return {"op": "touch", "path": self.path, "size": self.size}
        return {"op": self.op, "path": self.path}


@dataclass
class Plan:
    ops: list[Op] = field(default_factory=list)
    # content hashes known for moved files at their new paths, for the next snapshot
    hashes: dict[str, bytes] = field(default_factory=dict)

    def count(self, op: str) -> int:
        return sum(1 for o in self.ops if o.op == op)

    @property
    def upload_bytes(self) -> int:
        return sum(o.size for o in self.ops if o.op == "upload")

    @property
    def deleted_files(self) -> int:
        return sum(len(o.files) if o.kind == DIR else 1 for o in self.ops
                   if o.op == "delete" and o.reason != "prune")

    @property
    def moved_files(self) -> int:
        return sum(len(o.files) if o.kind == DIR else 1 for o in self.ops
                   if o.op == "move" and o.reason != "temp")

    @property
    def moved_bytes(self) -> int:
        return sum(o.size for o in self.ops if o.op == "move" and o.reason != "temp")

    def summary(self) -> dict:
        return {
            "upload": {"count": self.count("upload"), "bytes": self.upload_bytes},
            "move": {"count": sum(1 for o in self.ops if o.op == "move" and o.reason != "temp"),
                     "files": self.moved_files, "bytes_saved": self.moved_bytes},
            "touch": {"count": self.count("touch"), "bytes_saved": sum(o.size for o in self.ops if o.op == "touch")},
            "delete": {"count": self.count("delete"), "files": self.deleted_files},
            "mkdir": {"count": self.count("mkdir")},
        }


# --- pairing -----------------------------------------------------------------

def _source_trusted(s: Stale, precision_ns: int) -> bool:
    """the remote still holds what the last snapshot says we put there."""
    return (s.remote.kind == FILE and s.prev is not None and s.prev.kind == FILE
            and not file_changed(s.prev, s.remote, precision_ns))


def inode_key(e: Entry) -> tuple:
    return (e.dev, e.inode, e.size, e.mtime_ns)


def _basename(path: str) -> str:
    return path.rpartition("/")[2]


def _known_hash(s: Stale) -> bytes | None:
    return (s.prev.hash if s.prev is not None else None) or s.remote.hash


def _needs_content_check(s: Stale, new: Entry) -> bool:
    """a deleted file's inode can be reused by a new file of the same size and
    mtime (tar, cp -p): the inode alone is trusted only when the name is kept,
    as in a folder rename. A renamed file must match by content too, when we
    know the old content's hash (we do for all we sent)."""
    assert s.prev is not None
    same_name = _basename(s.prev.path).casefold() == _basename(new.path).casefold()
    return not same_name and _known_hash(s) is not None


def _inode_vouches(s: Stale, new: Entry) -> bool:
    return not _needs_content_check(s, new) or (new.hash is not None and new.hash == _known_hash(s))


def remote_hash(s: Stale, precision_ns: int) -> bytes | None:
    """the content hash of the remote file: its own (S3 metadata), else the
    one the last snapshot recorded, while the remote still holds what we sent."""
    if s.remote.hash is not None:
        return s.remote.hash
    return s.prev.hash if _source_trusted(s, precision_ns) else None


def _may_touch(s: Stale | None, c: Entry, precision_ns: int) -> bool:
    """the remote file at c's path is c's size and we know its content hash:
    if c hashes alike, setting its mtime (a touch) is all it needs."""
    return (s is not None and s.displaced and s.remote.kind == FILE and c.kind == FILE
            and s.remote.size == c.size and remote_hash(s, precision_ns) is not None)


def _is_touch(s: Stale | None, c: Entry, caps: Capabilities, perms: bool) -> bool:
    if not caps.set_mtime or s is None or c.hash is None or not _may_touch(s, c, caps.mtime_precision_ns):
        return False
    if perms and s.remote.mode and c.mode and (s.remote.mode & 0o7777) != (c.mode & 0o7777):
        return False  # the mode must be sent too: an upload
    return remote_hash(s, caps.mtime_precision_ns) == c.hash


def needs_hash(changes: Changes, precision_ns: int, touch: bool = False) -> list[Entry]:
    """Local files the plan needs a content hash for, to pair them with a
    remote file as a move: those whose inode a renamed file left, unless the
    inode alone vouches, and those the size of a stale remote file whose
    content hash is known. touch: also those whose remote copy is the same
    size with a known hash (a new mtime on the same content: _is_touch).
    The other files to send are hashed as they are sent, for the next
    snapshot (engine.Run.hashes_of_sent)."""
    by_inode, by_hash = _move_sources(changes, precision_ns)
    sizes = {size for size, _ in by_hash}

    def wanted(c: Entry) -> bool:
        if touch and _may_touch(changes.stale.get(c.path), c, precision_ns):
            return True
        s = by_inode.get(inode_key(c))
        return _needs_content_check(s, c) if s is not None else c.size in sizes

    return [c for c in changes.needed.values() if c.kind == FILE and c.hash is None and wanted(c)]


def _move_sources(changes: Changes, precision_ns: int, delete: bool = True) -> tuple[dict, dict]:
    """stale remote files a new file may be a move of, by the inode the last
    snapshot recorded (while the remote still holds what we put there) and
    by (size, content hash)."""
    by_inode: dict[tuple, Stale] = {}
    by_hash: dict[tuple, Stale] = {}
    for s in changes.stale.values():
        if s.remote.kind != FILE:
            continue
        if not delete and s.prev is None:
            continue  # kept on the remote without --delete: never moved away
        if _source_trusted(s, precision_ns):
            by_inode.setdefault(inode_key(s.prev), s)
            if s.prev.hash is not None:
                by_hash.setdefault((s.prev.size, s.prev.hash), s)
        elif s.remote.hash is not None:
            by_hash.setdefault((s.remote.size, s.remote.hash), s)
    return by_inode, by_hash


def _pair_files(changes: Changes, precision_ns: int, delete: bool = True) -> list[tuple[Stale, Entry]]:
    by_inode, by_hash = _move_sources(changes, precision_ns, delete)
    used: set[int] = set()
    pairs = []
    for c in changes.needed.values():
        if c.kind != FILE:
            continue
        s = by_inode.get(inode_key(c))
        if s is not None and not _inode_vouches(s, c):
            s = None
        if s is None and c.hash is not None:
            s = by_hash.get((c.size, c.hash))
            # a rename keeps the remote mtime: only pair when it is already right.
            if s is not None and file_changed(s.remote, c, precision_ns):
                s = None
        if s is None or id(s) in used or s.remote.path == c.path:
            continue
        used.add(id(s))
        pairs.append((s, c))
    return pairs


# --- directory moves ---------------------------------------------------------

def _dir_candidates(pairs: list[tuple[Stale, Entry]], changes: Changes,
                    delete: bool = True) -> dict[tuple[str, str], int]:
    votes: dict[tuple[str, str], int] = defaultdict(int)
    # without --delete a folder holding files kept from earlier runs is not
    # moved whole: the kept files stay where they are
    kept = set() if delete else _ancestors(p for p, s in changes.stale.items()
                                           if s.prev is None and s.remote.kind != DIR)
    for s, c in pairs:
        xs, ys = s.remote.path.split("/"), c.path.split("/")
        best = None
        j = 1
        while j < len(xs) and j < len(ys) and xs[-j] == ys[-j]:
            a, b = "/".join(xs[:-j]), "/".join(ys[:-j])
            sa, nb = changes.stale.get(a), changes.needed.get(b)
            if (sa is not None and sa.remote.kind == DIR and not sa.displaced and nb is not None
                    and nb.kind == DIR and a not in kept):
                best = (a, b)
            j += 1
        if best:
            votes[best] += 1
    return votes


def _ancestors(paths: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for p in paths:
        p = parent_of(p)
        while p and p not in out:
            out.add(p)
            p = parent_of(p)
    return out


def _choose_dir_moves(votes: dict[tuple[str, str], int]) -> list[tuple[str, str]]:
    chosen: list[tuple[str, str]] = []
    sources: set[str] = set()
    targets: set[str] = set()
    for (a, b), _ in sorted(votes.items(), key=lambda kv: (kv[0][0].count("/"), -kv[1], kv[0])):
        if a in sources or b in targets:
            continue
        implied = any(is_inside(a, a2) and b == b2 + a[len(a2):] for a2, b2 in chosen)
        if implied:
            continue
        chosen.append((a, b))
        sources.add(a)
        targets.add(b)
    return chosen


def _relocate(changes: Changes, a: str, b: str, precision_ns: int, hashes: dict[str, bytes]) -> list[str]:
    """Move the stale entries under a to b in our picture of the remote; what
    now matches the source drops out of both sides. Returns the files moved;
    hashes gets the known content hashes of the files at their new paths."""
    moved_files = []
    inside = [p for p in changes.stale if is_inside(p, a)]
    for p in inside:
        s = changes.stale.pop(p)
        new = b + p[len(a):]
        if s.remote.kind == FILE:
            moved_files.append(p[len(a) + 1:])
        s.remote = Entry(new, s.remote.kind, s.remote.size, s.remote.mtime_ns, hash=s.remote.hash,
                         target=s.remote.target)
        c = changes.needed.get(new)
        if c is not None and not file_changed(s.remote, c, precision_ns):
            del changes.needed[new]
            _carry_hash(s, c, hashes)
            continue
        s.displaced = c is not None
        changes.stale[new] = s
    return moved_files


def _carry_hash(s: Stale, c: Entry, hashes: dict[str, bytes]) -> None:
    """the moved file is the one we hashed before: its hash goes with it, so a
    later rename of it can still be checked by content."""
    if c.hash is None and s.prev is not None and s.prev.hash is not None and inode_key(s.prev) == inode_key(c):
        hashes[c.path] = s.prev.hash


# --- ordering ----------------------------------------------------------------

class _Namespace:
    """Our picture of the remote while ops are being ordered: applies the
    renames done so far to paths named as they were when the plan was made."""

    def __init__(self) -> None:
        self.renames: list[tuple[str, str]] = []

    def now(self, orig: str) -> str:
        path = orig
        for old, new in self.renames:
            if is_inside(path, old):
                path = new + path[len(old):]
        return path

    def rename(self, old: str, new: str) -> None:
        self.renames.append((old, new))


@dataclass
class _Move:
    orig: str
    dst: str
    kind: str
    files: list[str]
    size: int


def _order_moves(moves: list[_Move], ns: _Namespace, stale: dict[str, Stale], ops: list[Op], tag: str,
                 folded: dict[str, str] | None = None) -> None:
    """folded: on a case-insensitive remote, the stale paths by casefold
    (_clear_target): a target or a source under another spelling is the same name."""
    fold = str.casefold if folded is not None else _same
    pending = sorted(moves, key=lambda m: (m.dst.count("/"), m.dst))
    temps = 0
    while pending:
        ready = None
        for m in pending:
            if not _move_blocked(m, pending, ns, fold):
                ready = m
                break
        if ready is None:
            # a swap or cycle: park one source under a temp name at the root.
            m = pending[0]
            temps += 1
            tmp = f"{TEMP_MARK}move-{tag}-{temps}"
            src = ns.now(m.orig)
            ops.append(Op("move", src, m.kind, to=tmp, reason="temp", files=m.files))
            ns.rename(src, tmp)
            continue
        pending.remove(ready)
        _clear_target(ready.dst, ready.kind, stale, ops, folded)
        src = ns.now(ready.orig)
        key = _stale_key(ready.dst, stale, folded) if ready.kind == FILE else None
        replaced = stale.pop(key) if key is not None else None
        ops.append(Op("move", src, ready.kind, to=ready.dst, files=ready.files, size=ready.size,
                      reason="moved", overwrites=replaced is not None))
        ns.rename(src, ready.dst)


def _same(path: str) -> str:
    return path


def _move_blocked(m: _Move, pending: list[_Move], ns: _Namespace, fold=_same) -> bool:
    src = ns.now(m.orig)
    if is_inside(m.dst, src) or is_inside(src, m.dst):
        return True  # into itself, or onto its own parent: needs a temp name
    dst = fold(m.dst)
    if dst != fold(src) and (is_inside(dst, fold(src)) or is_inside(fold(src), dst)):
        return True  # the same, spelled otherwise: 'a' into 'A/x' on a case-insensitive disk
    for m2 in pending:
        if m2 is m:
            continue
        src2 = fold(ns.now(m2.orig))
        if is_inside(dst, src2) or is_inside(src2, dst):
            return True  # the target is still in use by something that moves away
        if m2.kind == DIR and is_inside(dst, fold(m2.dst)) and dst != fold(m2.dst):
            return True  # its new parent directory arrives with m2
    return False


def _clear_target(path: str, kind: str, stale: dict[str, Stale], ops: list[Op],
                  folded: dict[str, str] | None = None) -> None:
    """Delete what stands in the way of putting `kind` at path: a stale thing
    of another kind at path, or a stale file where a parent must be. folded:
    on a case-insensitive remote, the stale paths by casefold, for what
    stands there under another spelling."""
    key = _stale_key(path, stale, folded)
    if key is not None and (stale[key].remote.kind != kind or (kind == DIR and key == path)):
        _delete_stale(key, stale, ops, reason="replaced")
    parent = parent_of(path)
    while parent:
        key = _stale_key(parent, stale, folded)
        if key is not None and stale[key].remote.kind != DIR:
            _delete_stale(key, stale, ops, reason="replaced")
        parent = parent_of(parent)


def _stale_key(path: str, stale: dict[str, Stale], folded: dict[str, str] | None) -> str | None:
    if path in stale:
        return path
    other = folded.get(path.casefold()) if folded is not None else None
    return other if other is not None and other in stale else None


def _delete_stale(path: str, stale: dict[str, Stale], ops: list[Op], reason: str) -> None:
    s = stale.pop(path)
    if s.remote.kind != DIR:
        ops.append(Op("delete", path, s.remote.kind, reason=reason, size=s.remote.size))
        return
    inside = sorted((p for p in stale if is_inside(p, path)), reverse=True)
    files, dirs = [], []
    for p in inside:
        child = stale.pop(p)
        (dirs if child.remote.kind == DIR else files).append(p[len(path) + 1:])
    ops.append(Op("delete", path, DIR, reason=reason, files=sorted(files), dirs=dirs))


# --- the plan ----------------------------------------------------------------

def make_plan(changes: Changes, caps: Capabilities, delete: bool = False, tag: str = "0",
              perms: bool = False) -> Plan:
    """tag makes this plan's temp names unique on the remote; perms: modes are
    mirrored too (a touch sets no mode)."""
    precision = caps.mtime_precision_ns
    moves: list[_Move] = []
    hashes: dict[str, bytes] = {}
    if caps.server_move:
        for a, b in _choose_dir_moves(_dir_candidates(_pair_files(changes, precision, delete), changes, delete)):
            size = sum(s.remote.size for p, s in changes.stale.items() if is_inside(p, a))
            files = _relocate(changes, a, b, precision, hashes)
            moves.append(_Move(a, b, DIR, files, size))
        for s, c in _pair_files(changes, precision, delete):
            del changes.needed[c.path]
            changes.stale.pop(s.remote.path)
            moves.append(_Move(s.orig, c.path, FILE, [], c.size))
            _carry_hash(s, c, hashes)
    ops: list[Op] = []
    ns = _Namespace()
    folded = {p.casefold(): p for p in changes.stale} if caps.case_insensitive else None
    _order_moves(moves, ns, changes.stale, ops, tag, folded)
    _add_transfers(changes, caps, ops, perms)
    if delete:
        _add_deletes(changes, ops, caps)
    return Plan(ops, hashes)


def _add_transfers(changes: Changes, caps: Capabilities, ops: list[Op], perms: bool = False) -> None:
    needed = sorted(changes.needed.values(), key=lambda e: e.path.encode("utf-8", "surrogateescape"))
    parents_of_needed = {parent_of(e.path) for e in needed}
    folded = {p.casefold(): p for p in changes.stale} if caps.case_insensitive else None
    for c in needed:
        _clear_target(c.path, c.kind, changes.stale, ops, folded)
    for c in needed:
        if c.kind == DIR:
            if caps.empty_dirs and c.path not in parents_of_needed:
                ops.append(Op("mkdir", c.path, DIR))
        elif c.kind == LINK:
            if caps.symlinks:
                ops.append(Op("link", c.path, LINK, entry=c))
        else:
            s = changes.stale.get(c.path)
            reason = "changed" if s is not None and s.displaced else "new"
            if s is not None:
                del changes.stale[c.path]  # overwritten in place, not deleted
            if _is_touch(s, c, caps, perms):
                ops.append(Op("touch", c.path, FILE, size=c.size, entry=c))
                continue
            ops.append(Op("upload", c.path, FILE, size=c.size, reason=reason, entry=c,
                          overwrites=reason == "changed"))


def _add_deletes(changes: Changes, ops: list[Op], caps: Capabilities) -> None:
    # on a case-insensitive remote 'Photo.JPG' and 'photo.jpg' are one file:
    # deleting the old spelling would delete what this plan just wrote
    written = {(o.to or o.path).casefold() for o in ops if o.op in ("upload", "touch", "move", "mkdir", "link")} \
        if caps.case_insensitive else set()
    # ... and a folder 'Docs' holding what this plan writes under 'docs/': deleted
    # whole, it would take the new files with it; its stale files go one by one
    holding = {parent for w in written for parent in _parents(w)}
    # top-most stale paths first, each taking its stale subtree with it
    for path in sorted(changes.stale, key=lambda p: p.encode("utf-8", "surrogateescape")):
        if path not in changes.stale or path.casefold() in written:
            continue
        if path.casefold() in holding:
            del changes.stale[path]  # the folder stays; what is inside is decided entry by entry
            continue
        _delete_stale(path, changes.stale, ops, reason="deleted")


def _parents(path: str) -> Iterable[str]:
    while (path := parent_of(path)):
        yield path


def iter_ops_json(ops: Iterable[Op]) -> list[dict]:
    return [o.to_json() for o in ops]


def keep_copies(plan: Plan, trash_run: str) -> None:
    """--backup-dir: everything a run overwrites or deletes goes to the trash
    run folder first, at its relative path."""
    for op in plan.ops:
        if op.op == "delete" and op.reason != "prune":
            op.backup = f"{trash_run}/{op.path}"
        elif op.op == "upload" and op.overwrites:
            op.backup = f"{trash_run}/{op.path}"
        elif op.op == "move" and op.overwrites and op.to:
            op.backup = f"{trash_run}/{op.to}"


def prune_trash(plan: Plan, runs: dict[str, list[str]], older_than: str, trash_root: str) -> None:
    """--backup-keep: drop trash run folders whose name sorts before the cutoff
    (names are UTC timestamps, so name order is time order)."""
    for name in sorted(runs):
        if name < older_than:
            plan.ops.append(Op("delete", f"{trash_root}/{name}", DIR, reason="prune",
                               files=sorted(runs[name])))
