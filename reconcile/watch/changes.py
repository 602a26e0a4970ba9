"""What a watcher reports, and the bounded set of paths waiting for a run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Change:
    """one path to look at again. tree: a folder, walked whole. lost: events
    were lost or cannot come (overflow, no watch): the reason, for status."""

    path: str  # relative to the source, "/"-separated; "" is the root
    tree: bool = False
    writing: bool = False  # a file was written to (it may still be open)
    closed: bool = False  # a file opened for writing was closed
    lost: str | None = None


def is_under(path: str, folder: str) -> bool:
    return folder == "" or path == folder or path.startswith(folder + "/")


class DirtySet:
    """paths whose entries may differ from the snapshot. Nested paths fold
    into the outermost; past `limit` paths the deepest fold into their
    parents, down to the root if need be, so memory stays bounded however
    much changes while the remote is away."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = max(limit, 1)
        self.paths: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def add(self, path: str) -> None:
        if "" in self.paths or path in self.paths:
            return
        if path == "" or _covered(path, self.paths):
            self.paths = {""} if path == "" else self.paths
            return
        self.paths = {p for p in self.paths if not is_under(p, path)}
        self.paths.add(path)
        if len(self.paths) > self.limit:
            self._collapse()

    def _collapse(self) -> None:
        while len(self.paths) > self.limit // 2:
            deepest = max(p.count("/") for p in self.paths)
            if deepest == 0:
                self.paths = {""}
                return
            self.paths = _outermost(p.rpartition("/")[0] if p.count("/") == deepest else p
                                    for p in self.paths)

    def take(self) -> list[str]:
        """the paths, sorted, emptying the set (a failed run puts them back)"""
        paths, self.paths = sorted(self.paths), set()
        return paths

    def put_back(self, paths: list[str]) -> None:
        for p in paths:
            self.add(p)


def _covered(path: str, folders: set[str]) -> bool:
    parent = path.rpartition("/")[0]
    while parent:
        if parent in folders:
            return True
        parent = parent.rpartition("/")[0]
    return False


def _outermost(paths) -> set[str]:
    out: set[str] = set()
    for p in sorted(set(paths), key=lambda p: p.count("/")):
        if p == "":
            return {""}
        if not _covered(p, out):
            out.add(p)
    return out
