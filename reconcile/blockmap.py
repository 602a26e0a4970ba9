"""Per-block xxh3 of large files, kept in the state folder, so that a changed
large file sends only its changed blocks (delta transfer, issue 26 item 3).

A remote that can copy ranges on the server (capabilities.delta) records,
after each upload of a file of DELTA_MIN or more, the file's block map (its
xxh3_128 and one xxh3_128 per BLOCK bytes) beside a tag saying which remote
file the map describes (size and mtime on SFTP, the ETag on S3, size, mtime
and inode on a folder). The next upload of a changed version maps the local
file again (or takes the map the plan made while it hashed the file, if the
file is still the version read then); a block whose hash and length are
unchanged is copied from the old remote file, the others are sent. The remote falls back to a full upload
whenever its old file no longer carries the recorded tag.

Records live in <state>/blocks/<xxh3_64 of the path>.msgpack, mode 0600.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import msgpack
import xxhash

from reconcile import portable, snapshot
from reconcile.entry import FILE, ROW_KIND, ROW_SIZE, decode_path, row_path
from reconcile.errors import SourceChanged
from reconcile.hashing import _buffer, hash_checked
from reconcile.statefile import open_read, write_private

log = logging.getLogger(__name__)

MiB = 1 << 20
DELTA_MIN = 64 * MiB  # smaller files are sent whole
BLOCK = 8 * MiB  # S3 sends delta blocks as parts: at least 5 MiB
VERSION = 1


@dataclass
class BlockMap:
    block: int  # bytes per block, a multiple of 1 MiB
    size: int
    digest: bytes  # xxh3_128 of the whole file
    blocks: list[bytes]  # xxh3_128 of each block, the last one maybe short
    # the local file this map was read from, as identity(): a map taken while
    # the plan hashed the file serves its upload only while the file is this one
    taken: tuple | None = field(default=None, compare=False)

    def span(self, i: int) -> tuple[int, int]:
        """(offset, length) of block i"""
        start = i * self.block
        return start, min(self.block, self.size - start)


def map_fd(fd: int, size: int, block: int = BLOCK) -> BlockMap:
    """the block map of an open file, read once. SourceChanged if it ends early."""
    hasher = BlockHasher(block)
    buf = _buffer()
    while hasher.size < size:
        n = portable.pread_into(fd, buf, hasher.size)
        if not n:
            raise SourceChanged("the file shrank while it was read")
        hasher.update(memoryview(buf)[:min(n, size - hasher.size)])
    return hasher.block_map()


# the plan's map of a file serves its upload only where a write is sure to
# show (ctime is the change time on POSIX; on Windows it is the creation time)
PLAN_MAPS = not portable.WINDOWS


def identity(s: os.stat_result) -> tuple:
    """which version of a local file: any write changes its ctime, even one
    that puts the mtime back"""
    return (s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns)


def map_file(path: str, expect_size: int, expect_mtime_ns: int | None, block: int = BLOCK) -> BlockMap:
    """hashing.hash_file's pass, mapping the blocks on the way (the map's
    digest is the file's xxh3), remembering the version it read. The plan
    hashes a changed large file this way, so that its upload need not read
    it again to map it (map_new with taken=). SourceChanged as hash_file."""
    hasher = BlockHasher(block)
    _, after = hash_checked(path, expect_size, expect_mtime_ns, hasher)
    bmap = hasher.block_map()
    bmap.taken = identity(after)
    return bmap


class BlockHasher:
    """the block map of bytes fed in order (update), as xxhash's hashers take
    them: an upload that reads the file to send it maps it on the way, so a
    large file is read once. digest() is the whole file's xxh3_128."""

    def __init__(self, block: int = BLOCK) -> None:
        self.block, self.size = block, 0
        self.whole, self.part = xxhash.xxh3_128(), xxhash.xxh3_128()
        self.blocks: list[bytes] = []

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            piece = view[:self.block - self.size % self.block]
            self.whole.update(piece)
            self.part.update(piece)
            self.size += len(piece)
            if self.size % self.block == 0:
                self.blocks.append(self.part.digest())
                self.part.reset()
            view = view[len(piece):]

    def digest(self) -> bytes:
        return self.whole.digest()

    def block_map(self) -> BlockMap:
        tail = [self.part.digest()] if self.size % self.block else []
        return BlockMap(self.block, self.size, self.whole.digest(), self.blocks + tail)


def block_hash(data: bytes | memoryview) -> bytes:
    return xxhash.xxh3_128_digest(data)


def reusable(old: BlockMap, new: BlockMap) -> list[bool]:
    """for each block of new: the old file holds it, same length, same place"""
    if old.block != new.block:
        return [False] * len(new.blocks)
    return [i < len(old.blocks) and old.span(i) == new.span(i) and old.blocks[i] == h
            for i, h in enumerate(new.blocks)]


def runs(flags: list[bool], block: int, size: int) -> list[tuple[int, int, bool]]:
    """(offset, length, reused) for each stretch of blocks alike"""
    out: list[tuple[int, int, bool]] = []
    for i, flag in enumerate(flags):
        start, end = i * block, min((i + 1) * block, size)
        if out and out[-1][2] == flag:
            out[-1] = (out[-1][0], end - out[-1][0], flag)
        else:
            out.append((start, end - start, flag))
    return out


class BlockStore:
    """block maps by remote path, each with its remote tag; None state_dir: none kept"""

    def __init__(self, state_dir: str | None, block: int = BLOCK, min_size: int = DELTA_MIN) -> None:
        self.dir = os.path.join(state_dir, "blocks") if state_dir else None
        self.block, self.min_size = block, min_size

    def wants(self, size: int) -> bool:
        return self.dir is not None and size >= self.min_size

    def hasher(self, size: int) -> BlockHasher | None:
        """a hasher that maps a file as it is sent, where it is large enough
        for a delta next time"""
        return BlockHasher(self.block) if self.wants(size) else None

    def map_new(self, fd: int, size: int, expected: bytes | None, path: str,
                taken: BlockMap | None = None) -> BlockMap | None:
        """the block map of the version about to be sent, where it is large
        enough for a delta next time; SourceChanged if it is not the one expected.
        taken: the map the plan took of this file (map_file), used without
        reading the file again while fd is still the version it read"""
        if not self.wants(size):
            return None
        if self.still(fd, taken, expected):
            return taken
        bmap = map_fd(fd, size, self.block)
        if expected is not None and bmap.digest != expected:
            raise SourceChanged(f"{path} changed since it was scanned; left for the next run")
        return bmap

    def still(self, fd: int, taken: BlockMap | None, expected: bytes | None = None) -> bool:
        """taken (map_file's) describes the open file fd as it is now"""
        return (PLAN_MAPS and taken is not None and taken.taken is not None and taken.block == self.block
                and (expected is None or taken.digest == expected) and taken.taken == identity(os.fstat(fd)))

    def reusable(self, path: str, bmap: BlockMap) -> tuple[list[bool], BlockMap, dict] | None:
        """(for each block of bmap whether the recorded old version holds it,
        the old map, its tag), or None when it holds none"""
        known = self.get(path)
        if known is None:
            return None
        flags = reusable(known[0], bmap)
        return (flags, *known) if any(flags) else None

    def _file(self, path: str) -> str:
        assert self.dir is not None
        return os.path.join(self.dir, xxhash.xxh3_64_hexdigest(path.encode("utf-8", "surrogateescape")) + ".msgpack")

    def get(self, path: str) -> tuple[BlockMap, dict] | None:
        """(map, tag) recorded for path, or None"""
        if self.dir is None:
            return None
        try:
            with open_read(self._file(path)) as f:
                rec = msgpack.unpackb(f.read(), raw=False)
            if rec.get("v") != VERSION or rec.get("path") != path.encode("utf-8", "surrogateescape"):
                return None
            m = rec["map"]
            bmap = BlockMap(int(m[0]), int(m[1]), bytes(m[2]), [bytes(b) for b in m[3]])
            if bmap.block <= 0 or len(bmap.blocks) != -(-bmap.size // bmap.block) or not isinstance(rec["tag"], dict):
                return None
            return bmap, rec["tag"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, IndexError, msgpack.UnpackException) as exc:
            log.info("ignoring unreadable block record for %s: %s", path, exc)
            return None

    def put(self, path: str, bmap: BlockMap, tag: dict) -> None:
        if self.dir is None:
            return
        rec = {"v": VERSION, "path": path.encode("utf-8", "surrogateescape"), "tag": tag,
               "map": [bmap.block, bmap.size, bmap.digest, bmap.blocks]}
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            write_private(self._file(path), msgpack.packb(rec, use_bin_type=True))
        except OSError as exc:  # only the next delta is lost: that upload goes whole
            log.warning("cannot save block record for %s: %s", path, exc.strerror)

    def tagged(self, path: str, tag: dict) -> bool:
        """path has a record, kept for the remote file with this tag"""
        known = self.get(path)
        return known is not None and known[1] == tag

    def retag(self, path: str, size: int, old: dict, new: dict) -> None:
        """the remote file the map describes got new metadata, same content
        (a touch): keep its map under the new tag, if it had the old one"""
        if not self.wants(size):
            return
        known = self.get(path)
        if known is not None and known[1] == old:
            self.put(path, known[0], new)

    def drop(self, path: str) -> None:
        if self.dir is None:
            return
        try:
            os.unlink(self._file(path))
        except OSError:
            pass

    def moved(self, src: str, dst: str, folder: bool = False, new_tag: dict | None = None) -> None:
        """the remote file src is now dst (folder: every file under src is now
        under dst): its record follows, so its next change is still a delta.
        new_tag: the move gave the file new metadata (an S3 copy's ETag)."""
        if self.dir is None:
            return
        if not folder:
            self._follow(src, dst, new_tag)
            return
        for path in self.paths():
            if path.startswith(src + "/"):
                self._follow(path, dst + path[len(src):], None)

    def _follow(self, src: str, dst: str, new_tag: dict | None) -> None:
        known = self.get(src)
        if known is None:
            self.drop(dst)  # dst's own record, if any, describes what the move replaced
            return
        self.put(dst, known[0], known[1] if new_tag is None else new_tag)
        self.drop(src)

    def paths(self) -> list[str]:
        """the paths records are kept for"""
        if self.dir is None:
            return []
        try:
            names = [n for n in os.listdir(self.dir) if n.endswith(".msgpack")]
        except OSError:
            return []
        paths = []
        for name in names:
            try:
                with open_read(os.path.join(self.dir, name)) as f:
                    path = msgpack.unpackb(f.read(), raw=False)["path"]
                paths.append(path.decode("utf-8", "surrogateescape"))
            except (OSError, ValueError, KeyError, TypeError, AttributeError, msgpack.UnpackException):
                continue  # unreadable: get() ignores it, put() replaces it
        return paths

    def prune(self, keep: Callable[[], Iterable[str]]) -> int:
        """after a complete run: drop the records of paths that keep() (the
        files of DELTA_MIN or more the run's snapshot holds, read only when
        there are records) does not give: deleted, shrunk, moved elsewhere,
        excluded. How many went."""
        recorded = self.paths()
        if not recorded:
            return 0
        gone = set(recorded) - set(keep())
        for path in gone:
            self.drop(path)
        return len(gone)


def large_files(snapshot_path: str, min_size: int = DELTA_MIN) -> Iterator[str]:
    """the files of min_size or more a snapshot holds"""
    for row in snapshot.read_rows(snapshot_path):
        if row[ROW_KIND] == FILE and row[ROW_SIZE] >= min_size:
            yield decode_path(row_path(row))
