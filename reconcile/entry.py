"""The one record type that flows through walk, snapshot, diff and plan."""

from __future__ import annotations

from dataclasses import dataclass, field

FILE = "f"
DIR = "d"
LINK = "l"

# names we create on a remote while writing or moving; never user data.
TEMP_MARK = ".reconcile-tmp-"


@dataclass(slots=True)
class Entry:
    """One file or directory, by its relative POSIX path.

    Undecodable bytes in names are kept as lone surrogates (surrogateescape).
    mtime_ns is None where a remote does not know it; hash is xxh3_128 (16 bytes)
    or None when not (yet) known.
    """

    path: str
    kind: str = FILE
    size: int = 0
    mtime_ns: int | None = None
    inode: int = 0
    dev: int = 0
    mode: int = 0
    hash: bytes | None = None
    target: str | None = None  # symlink target, when links are stored
    error: str | None = None  # set on a directory the walk could not read
    # a large file's blockmap.BlockMap, taken while the plan hashed it
    # (engine.hashes): its upload maps it for a delta without reading it again
    block_map: object | None = field(default=None, compare=False, repr=False)

    @property
    def is_dir(self) -> bool:
        return self.kind == DIR


def encode_path(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def decode_path(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def temp_tail(name: str) -> str:
    """how a temp name ends (TEMP_MARK, a random part, "-", then this): the
    file's own name cut to 100 bytes, so that the whole stays under the 255
    bytes a name may have; one rule for every writer (sftp upload, restore)"""
    return decode_path(encode_path(name)[:100])


def sort_key(path: str, kind: str) -> bytes:
    """The one order all three streams share: byte order of the path, where a
    directory sorts as 'name/' so its children follow it directly.

    'a-b' < 'a/' < 'a/x' < 'a0', which is also the order S3 lists keys in.
    """
    raw = encode_path(path)
    return raw + b"/" if kind == DIR else raw


def entry_key(entry: Entry) -> bytes:
    return sort_key(entry.path, entry.kind)


# A row is an Entry as a plain tuple, led by its sort key:
#   (key, kind, size, mtime_ns, inode, dev, mode, hash, target, error)
# the walk, the local listing, the snapshot and the merge pass rows, because
# building an Entry costs ~8x a tuple; Entries are built only for what changed.
ROW_KIND, ROW_SIZE, ROW_MTIME, ROW_INODE, ROW_DEV, ROW_MODE, ROW_HASH, ROW_TARGET, ROW_ERROR = range(1, 10)


def row_of(e: Entry) -> tuple:
    return (entry_key(e), e.kind, e.size, e.mtime_ns, e.inode, e.dev, e.mode, e.hash, e.target, e.error)


def entry_of(row: tuple) -> Entry:
    key = row[0]
    return Entry(decode_path(key[:-1] if row[1] == DIR else key), *row[1:])


def row_path(row: tuple) -> bytes:
    """the encoded path of a row: its key without a directory's '/'."""
    return row[0][:-1] if row[1] == DIR else row[0]


def is_temp_name(name: str) -> bool:
    return TEMP_MARK in name


def parent_of(path: str) -> str:
    i = path.rfind("/")
    return path[:i] if i >= 0 else ""


def is_inside(path: str, ancestor: str) -> bool:
    """true when path is ancestor itself or lies below it."""
    return path == ancestor or path.startswith(ancestor + "/")


def is_safe_path(path: str) -> bool:
    """a relative path that stays under the root: a hostile listing may hold
    '..', absolute paths or empty components, which we never act on."""
    if not path or path.startswith("/") or "\0" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))
