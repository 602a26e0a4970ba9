"""Multipart uploads: parts sent with a bounded window, resumed from the
parts S3 lists (the journal keeps the upload id), and parts the old object
already holds copied on the server (UploadPartCopy) instead of sent."""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import logging
import math
import os
import re
from dataclasses import dataclass
from typing import Callable, Iterable

from botocore import exceptions as bex

from reconcile.blockmap import BlockMap, block_hash
from reconcile.entry import Entry
from reconcile.errors import NotFound, Permanent, RemoteError, SourceChanged, Transient
from reconcile.hashing import hash_fd
from reconcile.remotes.base import Checkpoint, Progress
from reconcile.remotes.s3.body import MiB, BytesBody, _changed, pread_exact
from reconcile.remotes.s3.errors import precondition_failed
from reconcile.remotes.s3.objects import _etag

log = logging.getLogger(__name__)

# An upload cut by a kill loses only the parts in flight (a stored part is
# listed on resume): files above the threshold go in parts, and one upload
# keeps at most RESUME_SLACK of parts in flight, whatever --transfers is.
RESUME_SLACK = 32 * MiB
DEFAULT_MULTIPART_THRESHOLD = RESUME_SLACK
DEFAULT_PART_SIZE = 8 * MiB

MAX_PARTS = 10_000


class Multipart:
    """S3Remote's multipart uploads."""

    def _reusable_parts(self, path: str, size: int, bmap: BlockMap | None) -> _Reuse | None:
        """which parts of the new version the old object holds, by the block
        record of the object now listed under path (same ETag), or None"""
        known = self._blocks.reusable(path, bmap) if bmap is not None else None
        rec = self._recorded(path)
        if known is None or rec is None:
            return None
        same, old_map, tag = known
        if tag.get("etag") != rec[1] or tag.get("size") != rec[0] or old_map.size != rec[0]:
            return None  # the object changed since (or we never saw it listed)
        part_size = self._part_size_for(size)
        if part_size % bmap.block:
            return None
        per = part_size // bmap.block
        parts = {n + 1 for n in range(math.ceil(size / part_size)) if all(same[n * per:(n + 1) * per])}
        return _Reuse(rec[1], parts) if parts else None

    def _part_size_for(self, size: int) -> int:
        need = math.ceil(size / MAX_PARTS)
        return max(self.part_size, math.ceil(need / MiB) * MiB)

    def _upload_multipart(self, fd: int, key: str, path: str, entry: Entry, progress: Progress | None,
                          resume: dict | None, checkpoint: Checkpoint | None, bmap: BlockMap | None = None,
                          reuse: _Reuse | None = None) -> tuple[str, bytes, int]:
        """(etag, xxh3, bytes copied from the old object instead of sent)"""
        before = os.fstat(fd)
        digest = bmap.digest if bmap is not None else entry.hash or hash_fd(fd, entry.size, path)
        state = self._resume_state(key, resume)
        if state is None:
            part_size = self._part_size_for(entry.size)
            with self._errors(f"upload {path}"):
                upload_id = self.client.create_multipart_upload(
                    Bucket=self.bucket, Key=key, Metadata=self._metadata(entry.mtime_ns, digest, self._mode_of(entry)),
                    **self._extra_args())["UploadId"]
            if checkpoint:
                checkpoint({"upload_id": upload_id, "key": key, "part_size": part_size})
            stored: dict[int, tuple[str, int]] = {}
        else:
            upload_id, part_size, stored = state
        if reuse is not None and part_size != self._part_size_for(entry.size):
            reuse = None  # a resumed upload cut in other parts
        try:
            parts, copied = self._send_parts(fd, key, upload_id, entry.size, part_size, stored, progress, bmap, reuse)
        except _NotTheBlocks:
            self._abort_quietly(key, upload_id)
            raise
        if _changed(before, os.fstat(fd)):
            # parts stay for a resume-free restart; remove_temp_files aborts them.
            raise SourceChanged(f"{path} changed while being uploaded; left for the next run")
        with self._errors(f"finish upload of {path}"):
            try:
                resp = self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id,
                    MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]})
            except bex.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
                    raise Transient(f"upload of {path} was aborted meanwhile; it will start again") from None
                raise
        return _etag(resp.get("ETag")), digest, copied

    def _resume_state(self, key: str, resume: dict | None) -> tuple[str, int, dict[int, tuple[str, int]]] | None:
        """(upload_id, part_size, stored parts) when the upload can go on, else None."""
        if not resume or not resume.get("upload_id"):
            return None
        upload_id = resume["upload_id"]
        if resume.get("key") != key or not resume.get("part_size"):
            self._abort_quietly(resume.get("key") or key, upload_id)
            return None
        stored: dict[int, tuple[str, int]] = {}
        marker = 0
        try:
            while True:
                with self._errors(f"resume upload of {key}"):
                    resp = self.client.list_parts(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                  PartNumberMarker=marker)
                for p in resp.get("Parts", []) or []:
                    stored[int(p["PartNumber"])] = (p["ETag"], int(p["Size"]))
                if not resp.get("IsTruncated"):
                    break
                marker = int(resp.get("NextPartNumberMarker") or 0)
                if not marker:
                    break
        except NotFound:
            return None  # the upload is gone (completed or aborted): start over
        return upload_id, int(resume["part_size"]), stored

    def _send_parts(self, fd: int, key: str, upload_id: str, size: int, part_size: int,
                    stored: dict[int, tuple[str, int]], progress: Progress | None, bmap: BlockMap | None = None,
                    reuse: _Reuse | None = None) -> tuple[list[tuple[int, str]], int]:
        """the parts' (number, etag), and how many bytes were copied from the old object"""
        count = max(1, math.ceil(size / part_size))
        if count > MAX_PARTS:
            raise Permanent(f"{key}: {count} parts of {part_size} bytes exceed S3's {MAX_PARTS}")
        copied = [0]

        def send(n: int) -> tuple[int, str, int]:
            offset = (n - 1) * part_size
            length = min(part_size, size - offset)
            if reuse is not None and n in reuse.parts and n not in stored:
                etag = self._copy_part(key, upload_id, n, offset, length, reuse.etag)
                copied[0] += length
                return n, etag, 0
            return self._ensure_part(fd, key, upload_id, n, offset, length, stored.get(n), progress, bmap)

        parts = self._run_parts(range(1, count + 1), send, part_size)
        return parts, copied[0]

    def _copy_part(self, key: str, upload_id: str, n: int, offset: int, length: int, etag: str) -> str:
        """part n from the same range of the object now at key, only while it
        is the version whose blocks we recorded (its ETag): else _NotTheBlocks"""
        try:
            with self._errors(f"copy part {n} of {key}"):
                try:
                    resp = self.client.upload_part_copy(
                        Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=n,
                        CopySource={"Bucket": self.bucket, "Key": key}, CopySourceIfMatch=f'"{etag}"',
                        CopySourceRange=f"bytes={offset}-{offset + length - 1}")
                except bex.ClientError as exc:
                    # inside _errors, which would make it a Permanent error: the whole file goes instead
                    if precondition_failed(exc):
                        raise _NotTheBlocks() from None
                    raise
        except NotFound:
            raise _NotTheBlocks() from None
        return resp["CopyPartResult"]["ETag"]

    def _run_parts(self, numbers: Iterable[int], send: Callable[[int], tuple[int, str, int]],
                   part_size: int) -> list[tuple[int, str]]:
        """send(n) for every part number, in order, with at most RESUME_SLACK
        of this upload's parts in flight; (number, etag) sorted."""
        window = max(1, min(self.part_workers, RESUME_SLACK // part_size))
        todo = iter(numbers)
        pool = self._parts()
        futures: set[cf.Future] = set()
        etags: dict[int, str] = {}

        def more() -> None:
            while len(futures) < window and (n := next(todo, None)) is not None:
                futures.add(pool.submit(send, n))

        try:
            more()
            while futures:
                done, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    futures.discard(fut)
                    n, etag, _ = fut.result()
                    etags[n] = etag
                more()
        except BaseException:
            for fut in futures:
                fut.cancel()
            cf.wait(futures)  # parts in flight finish and count for a resume
            raise
        return sorted(etags.items())

    def _ensure_part(self, fd: int, key: str, upload_id: str, n: int, offset: int, length: int,
                     stored: tuple[str, int] | None, progress: Progress | None = None,
                     bmap: BlockMap | None = None) -> tuple[int, str, int]:
        """(part number, etag, bytes sent): a stored part of the right size and
        content is kept, where its ETag is the MD5 we can check. With a block
        map, the part must still hold the blocks it describes."""
        data = pread_exact(fd, length, offset)
        if bmap is not None and offset % bmap.block == 0:
            for pos in range(0, length, bmap.block):
                if block_hash(data[pos:pos + bmap.block]) != bmap.blocks[(offset + pos) // bmap.block]:
                    raise SourceChanged(f"{key} changed while being uploaded; left for the next run")
        if stored is not None and stored[1] == length:
            etag = _etag(stored[0])
            if self.options.s3.sse == "aws:kms" or not re.fullmatch(r"[0-9a-f]{32}", etag):
                return n, stored[0], 0  # no md5 to check against: trust the size
            if hashlib.md5(data, usedforsecurity=False).hexdigest() == etag:
                return n, stored[0], 0
        with self._errors(f"upload part {n} of {key}"):
            resp = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                           PartNumber=n, Body=BytesBody(data, progress))
        return n, resp["ETag"], length

    def _abort_quietly(self, key: str, upload_id: str) -> bool:
        try:
            with self._errors(f"abort upload of {key}"):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            return True
        except RemoteError as exc:
            log.info("could not abort upload %s of %s: %s", upload_id, key, exc)
            return False


class _NotTheBlocks(Exception):
    """the object under the key is no longer the one whose blocks were recorded"""


@dataclass
class _Reuse:
    etag: str  # of the old object, as recorded with its blocks
    parts: set[int]  # part numbers the old object holds at the same place
