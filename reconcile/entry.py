"""The one record type that flows through walk, snapshot, diff and plan."""

from __future__ import annotations

from dataclasses import dataclass

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

    @property
    def is_dir(self) -> bool:
        return self.kind == DIR


def encode_path(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def decode_path(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def sort_key(path: str, kind: str) -> bytes:
    """The one order all three streams share: byte order of the path, where a
    directory sorts as 'name/' so its children follow it directly.

    'a-b' < 'a/' < 'a/x' < 'a0', which is also the order S3 lists keys in.
    """
    raw = encode_path(path)
    return raw + b"/" if kind == DIR else raw


def entry_key(entry: Entry) -> bytes:
    return sort_key(entry.path, entry.kind)


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
