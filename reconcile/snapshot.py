"""The snapshot: every source entry of the last good run, in sort_key order.

Layout: MAGIC, a msgpack header map, one msgpack array per entry, then a
fixed footer (xxh3_128 of everything before it, and its length). Written to a
temp name, fsynced, renamed into place. A file that fails its checksum is
treated as absent, which never causes a deletion on its own: the remote
listing, not the snapshot, decides what the remote holds.
"""

from __future__ import annotations

import os
import struct
from itertools import chain
from typing import BinaryIO, Iterable, Iterator

import msgpack
import xxhash

from reconcile.entry import DIR, Entry, encode_path, entry_of, row_path
from reconcile.statefile import atomic_replace, open_private

MAGIC = b"RCNLSNAP"
VERSION = 1
FOOTER = struct.Struct(">16sQ")


class CorruptState(Exception):
    """a state file failed its checksum or could not be parsed."""


def _pack_entry(e: Entry) -> tuple:
    return (encode_path(e.path), e.kind, e.size, e.mtime_ns, e.inode, e.dev, e.mode, e.hash,
            e.target)


FLUSH = 1 << 16
ROWS_AT_ONCE = 1024


class SnapshotWriter:
    """Streams entries to a temp file; commit() makes it the snapshot."""

    def __init__(self, path: str, header: dict | None = None, tmp: str | None = None) -> None:
        self.path = path
        self.tmp = tmp or path + ".tmp"
        self._f: BinaryIO = open_private(self.tmp)
        self._hash = xxhash.xxh3_128()
        self._length = 0
        self._packer = msgpack.Packer(use_bin_type=True, unicode_errors="surrogateescape")
        self._buf = bytearray()  # entries are small: write and hash them in blocks
        self._rows: list[tuple] = []  # add_row's rows, packed ROWS_AT_ONCE at a time
        self.count = 0
        # (key of a row, byte offset where it starts) at the head of each block of rows
        # add_row packed: known.py reads and rewrites one block of a large snapshot
        # without the rest. None once add() mixed in rows it cannot place.
        self.index: list[tuple[bytes, int]] | None = []
        self._write(MAGIC)
        self._write(self._packer.pack({"version": VERSION, **(header or {})}))

    def _write(self, data: bytes) -> None:
        self._f.write(data)
        self._hash.update(data)
        self._length += len(data)

    def _add(self, packed: bytes) -> None:
        self._pack_rows()
        self.index = None
        self._buf += packed
        self.count += 1
        if len(self._buf) >= FLUSH:
            self._flush()

    def _pack_rows(self) -> None:
        """the rows as one msgpack array, less its header: the same bytes as
        packing each row alone, for one call instead of one per row."""
        rows = self._rows
        if not rows:
            return
        if self.index is not None:
            self.index.append((rows[0][0], self._length + len(self._buf)))
        self._buf += pack_rows(self._packer, rows)
        self.count += len(rows)
        rows.clear()

    def _flush(self) -> None:
        self._pack_rows()
        if self._buf:
            self._write(bytes(self._buf))
            self._buf.clear()

    def add(self, entry: Entry) -> None:
        self._add(self._packer.pack(_pack_entry(entry)))

    def add_row(self, row: tuple) -> None:
        """add() for a row (entry.row_of), without building an Entry."""
        self._rows.append(row)
        if len(self._rows) >= ROWS_AT_ONCE:
            self._pack_rows()
            if len(self._buf) >= FLUSH:
                self._flush()

    def copy(self, data: bytes, heads: list[tuple[bytes, int]]) -> None:
        """rows packed by another writer, as they are (known.py): heads are
        the (key, offset in data) of their blocks"""
        self._flush()
        if self.index is not None:
            self.index.extend((key, self._length + offset) for key, offset in heads)
        self._write(data)

    def finish(self) -> None:
        """Seal the temp file (footer, fsync) without putting it in place."""
        self._flush()
        self._f.write(FOOTER.pack(self._hash.digest(), self._length))
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()

    def commit(self) -> None:
        atomic_replace(self.tmp, self.path)

    def discard(self) -> None:
        if not self._f.closed:
            try:
                self._f.close()
            except OSError:
                pass  # a full disk fails the last flush; the file is closed and removed all the same
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


def pack_rows(packer: msgpack.Packer, rows: list[tuple]) -> memoryview:
    """rows packed one after another: one msgpack array, less its header, is
    the same bytes as packing each row alone, for one call instead of one per row"""
    n = len(rows)
    packed = packer.pack([(row_path(r), *r[1:9]) for r in rows])
    return memoryview(packed)[1 if n < 16 else 3 if n < 1 << 16 else 5:]


def unpack_rows(unpacker: msgpack.Unpacker) -> list[tuple]:
    """the rows fed to unpacker (one made by new_unpacker) so far"""
    try:
        return [(p + b"/" if kind == DIR else p, kind, size, mtime_ns, inode, dev, mode, hsh, target, None)
                for p, kind, size, mtime_ns, inode, dev, mode, hsh, target in unpacker]
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CorruptState(f"a snapshot holds an entry of unknown shape ({exc.__class__.__name__})") from None


def new_unpacker() -> msgpack.Unpacker:
    return msgpack.Unpacker(use_list=False, raw=False, unicode_errors="surrogateescape", max_buffer_size=1 << 26)


def with_hashes(rows: Iterable[tuple], hashes: dict[str, bytes | None]) -> Iterator[tuple]:
    """rows with the hashes a run learnt put in; a file whose hash is None
    (unreadable, or changed while sent) is left out: not recorded"""
    by_key = {encode_path(p): h for p, h in hashes.items()}
    for row in rows:
        path = row_path(row)
        if path in by_key:
            if by_key[path] is None:
                continue
            row = row[:7] + (by_key[path],) + row[8:]
        yield row


def verify(path: str) -> None:
    """Check the footer checksum in one fast pass; raise CorruptState."""
    size = os.path.getsize(path)
    if size < len(MAGIC) + FOOTER.size:
        raise CorruptState(f"{path} is truncated")
    h = xxhash.xxh3_128()
    body = size - FOOTER.size
    with open(path, "rb") as f:
        remaining = body
        while remaining:
            chunk = f.read(min(remaining, 1 << 20))
            if not chunk:
                raise CorruptState(f"{path} is truncated")
            h.update(chunk)
            remaining -= len(chunk)
        digest, length = FOOTER.unpack(f.read(FOOTER.size))
    if length != body or digest != h.digest():
        raise CorruptState(f"{path} fails its checksum")


def read_header(path: str) -> dict:
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise CorruptState(f"{path} is not a reconcile snapshot")
        unpacker = msgpack.Unpacker(f, raw=False, unicode_errors="surrogateescape")
        header = next(unpacker)
    if not isinstance(header, dict) or header.get("version") != VERSION:
        raise CorruptState(f"{path} has an unknown format version")
    return header


def read_entries(path: str) -> Iterator[Entry]:
    """Entries of a verified snapshot, streamed: memory does not grow with it."""
    for row in read_rows(path):
        yield entry_of(row)


def read_rows(path: str) -> Iterator[tuple]:
    """read_entries() as rows (entry.row_of), the form the merge reads."""
    return chain.from_iterable(_row_blocks(path))


def _row_blocks(path: str) -> Iterator[list[tuple]]:
    body = os.path.getsize(path) - FOOTER.size
    with open(path, "rb") as f:
        f.read(len(MAGIC))
        unpacker = new_unpacker()
        remaining = body - len(MAGIC)
        header = True
        while remaining > 0:
            chunk = f.read(min(remaining, 1 << 18))
            if not chunk:
                break
            remaining -= len(chunk)
            unpacker.feed(chunk)
            if header:
                if next(unpacker, None) is None:
                    continue
                header = False
            try:
                yield unpack_rows(unpacker)
            except CorruptState as exc:
                raise CorruptState(str(exc).replace("a snapshot", path, 1)) from None
