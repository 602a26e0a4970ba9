"""The journal: an append-only msgpack log of one apply.

First a header and the whole plan (fsynced before the first remote change),
then one small record per finished operation or resume checkpoint. A record
torn by a kill is ignored: replaying an operation is harmless.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import msgpack

from reconcile.entry import DIR, FILE, LINK, Entry, is_safe_path
from reconcile.plan import Op
from reconcile.statefile import fsync_dir, open_private, open_read

VERSION = 1


class CorruptJournal(Exception):
    pass


def _op_to_row(op: Op) -> dict:
    e = op.entry
    return {
        "op": op.op, "path": op.path, "kind": op.kind, "to": op.to, "size": op.size,
        "reason": op.reason, "files": op.files, "dirs": op.dirs, "backup": op.backup,
        "overwrites": op.overwrites,
        "entry": None if e is None else [e.path, e.kind, e.size, e.mtime_ns, e.inode, e.dev, e.mode,
                                         e.hash, e.target],
    }


OPS = {"upload", "touch", "mkdir", "link", "move", "delete"}
KINDS = {FILE, DIR, LINK}


def _row_to_op(row: dict) -> Op:
    """an operation, checked: a journal is replayed against the destination,
    so every path in it must be a safe relative path and every field its type"""
    e = row["entry"]
    entry = None if e is None else _entry(e)
    op = Op(row["op"], row["path"], row["kind"], row["to"], row["size"], row["reason"],
            list(row["files"]), list(row["dirs"]), entry, row.get("backup"), row.get("overwrites", False))
    if op.op not in OPS or op.kind not in KINDS or not isinstance(op.size, int) \
            or not isinstance(op.reason, str) or not isinstance(op.overwrites, bool):
        raise CorruptJournal(f"an operation of unknown shape: {op.op!r}")
    inner = [f"{op.path}/{f}" for f in op.files] + [f"{op.path}/{d}" for d in op.dirs]
    for path in [op.path, *(p for p in (op.to, op.backup) if p is not None), *inner]:
        if not isinstance(path, str) or not is_safe_path(path):
            raise CorruptJournal(f"an operation on an unsafe path: {path!r}")
    return op


def _entry(e: list) -> Entry:
    entry = Entry(*e)
    if not isinstance(entry.path, str) or not is_safe_path(entry.path) or entry.kind not in KINDS \
            or not all(isinstance(v, int) or v is None for v in (entry.size, entry.mtime_ns, entry.mode)) \
            or not isinstance(entry.hash, (bytes, type(None))) or not isinstance(entry.target, (str, type(None))):
        raise CorruptJournal(f"an entry of unknown shape: {entry.path!r}")
    return entry


def _packer() -> msgpack.Packer:
    return msgpack.Packer(use_bin_type=True, unicode_errors="surrogateescape")


@dataclass
class Pending:
    """What an unfinished journal still has to do."""

    header: dict
    ops: list[Op]
    done: set[int] = field(default_factory=set)
    resume: dict[int, dict] = field(default_factory=dict)

    @property
    def remaining(self) -> list[int]:
        return [i for i in range(len(self.ops)) if i not in self.done]


class Journal:
    def __init__(self, path: str) -> None:
        self.path = path
        self._f = None
        self._packer = _packer()

    def start(self, header: dict, ops: list[Op]) -> None:
        tmp = self.path + ".tmp"
        with open_private(tmp) as f:
            f.write(self._packer.pack({"version": VERSION, "started": time.time(), **header}))
            f.write(self._packer.pack([_op_to_row(o) for o in ops]))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fsync_dir(os.path.dirname(self.path) or ".")
        self._f = open_private(self.path, "ab")

    def reopen(self) -> None:
        self._f = open_private(self.path, "ab")

    def _append(self, record: dict, sync: bool = False) -> None:
        assert self._f is not None
        self._f.write(self._packer.pack(record))
        self._f.flush()
        if sync:
            os.fsync(self._f.fileno())

    def done(self, i: int, result: str = "done") -> None:
        # no fsync: a lost record only means a harmless replay after a crash
        self._append({"i": i, "r": result})

    def checkpoint(self, i: int, state: dict) -> None:
        self._append({"i": i, "c": state}, sync=True)

    def finish(self) -> None:
        """All operations ended: the journal goes away."""
        if self._f is not None:
            self._f.close()
            self._f = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        if self._f is not None:
            try:
                self._f.flush()
                os.fsync(self._f.fileno())
                self._f.close()
            except OSError:
                pass  # a torn last record is ignored on load; replays are harmless
            self._f = None


def load(path: str) -> Pending | None:
    """The unfinished journal at path, or None. Raises CorruptJournal."""
    if not os.path.exists(path):
        return None
    try:
        with open_read(path) as f:
            unpacker = msgpack.Unpacker(f, raw=False, unicode_errors="surrogateescape",
                                        strict_map_key=False)
            header = next(unpacker)
            if not isinstance(header, dict) or header.get("version") != VERSION:
                raise CorruptJournal(f"{path}: unknown journal format version")
            rows = next(unpacker)
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise CorruptJournal(f"{path}: no list of operations")
            ops = [_row_to_op(r) for r in rows]
            pending = Pending(header, ops)
            try:
                for rec in unpacker:
                    i = rec["i"]
                    if not isinstance(i, int) or not 0 <= i < len(ops):
                        raise CorruptJournal(f"{path}: a record for operation {i!r}, which is not in it")
                    if "c" in rec:
                        if not isinstance(rec["c"], dict):
                            raise CorruptJournal(f"{path}: a checkpoint of unknown shape")
                        pending.resume[i] = rec["c"]
                    else:
                        pending.done.add(i)
            except (ValueError, msgpack.UnpackException, KeyError, TypeError):
                pass  # a torn last record
    except CorruptJournal:
        raise
    except StopIteration:
        raise CorruptJournal(f"{path} is truncated") from None
    except Exception as exc:
        raise CorruptJournal(f"{path} cannot be read: {exc}") from None
    return pending
