"""Request bodies read from the local file: each reports its bytes as they
go out (progress, --bwlimit), and a streamed one checks the file did not
change under it."""

from __future__ import annotations

import hashlib
import os

import xxhash

from reconcile import portable
from reconcile.errors import SourceChanged
from reconcile.remotes.base import Progress

MiB = 1 << 20
METER_EVERY = 64 << 10  # progress (and --bwlimit) steps while a body is sent


def pread_exact(fd: int, length: int, offset: int) -> bytes:
    data = portable.pread(fd, length, offset)
    while len(data) < length:  # short reads are legal; eof means the file shrank
        more = portable.pread(fd, length - len(data), offset + len(data))
        if not more:
            raise SourceChanged("local file shrank while being uploaded; left for the next run")
        data += more
    return data


class MeteredBody:
    """A request body that reports its bytes as they go out, so --bwlimit
    paces the wire, not whole requests. botocore reads a body twice: once to
    sign it (payload signing is forced on in make_client), then to send it.
    The first full pass is no traffic; every later one (the send, a retry) is."""

    def __init__(self, size: int, progress: Progress | None) -> None:
        self.size, self.progress = size, progress
        self.pos = 0
        self._passes = 0  # passes read and rewound so far
        self._read = 0  # bytes read in this pass
        self._unreported = 0

    def __len__(self) -> int:
        return self.size

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 else self.size + offset
        if self.pos == 0 and self._read:
            self._report()
            self._passes += 1
            self._read = 0
        return self.pos

    def read(self, n: int = -1) -> bytes:
        want = self.size - self.pos if n is None or n < 0 else min(n, self.size - self.pos)
        if want <= 0:
            return b""
        data = self._chunk(self.pos, want)
        self.pos += len(data)
        self._read += len(data)
        if self._passes and self.progress:
            self._unreported += len(data)
            if self._unreported >= METER_EVERY or self.pos == self.size:
                self._report()  # may sleep for --bwlimit before these bytes are sent
        return data

    def _report(self) -> None:
        if self._unreported and self.progress:
            self.progress(self._unreported)
        self._unreported = 0

    def _chunk(self, pos: int, n: int) -> bytes:
        raise NotImplementedError


class BytesBody(MeteredBody):
    """an in-memory body (a small file, one multipart part)."""

    def __init__(self, data: bytes, progress: Progress | None) -> None:
        super().__init__(len(data), progress)
        self.data = memoryview(data)

    def _chunk(self, pos: int, n: int) -> bytes:
        return bytes(self.data[pos:pos + n])


class VerifiedBody(MeteredBody):
    """A file body for one PUT that hashes what it hands out. A request body
    that ends early never becomes an object, so raising before the last byte
    keeps the old version in place when the file changed under us."""

    def __init__(self, fd: int, size: int, digest: bytes, path: str, progress: Progress | None = None) -> None:
        super().__init__(size, progress)
        self.fd, self.digest, self.path = fd, digest, path
        self._hash: "xxhash.xxh3_128 | None" = xxhash.xxh3_128()

    def seek(self, offset: int, whence: int = 0) -> int:
        pos = super().seek(offset, whence)
        # botocore rewinds to 0 to sign, then to send or retry; a read from
        # elsewhere cannot be checked here, only by the fstat after the PUT
        self._hash = xxhash.xxh3_128() if pos == 0 else None
        return pos

    def _chunk(self, pos: int, n: int) -> bytes:
        data = pread_exact(self.fd, n, pos)
        if self._hash is not None:
            self._hash.update(data)
            if pos + len(data) == self.size and self._hash.digest() != self.digest:
                raise SourceChanged(f"{self.path} changed while being uploaded; left for the next run")
        return data


def _file_md5(fd: int, size: int) -> "hashlib._Hash":
    md5 = hashlib.md5(usedforsecurity=False)
    for offset in range(0, size, MiB):
        md5.update(pread_exact(fd, min(MiB, size - offset), offset))
    return md5


def _changed(before: os.stat_result, after: os.stat_result) -> bool:
    return (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns)
