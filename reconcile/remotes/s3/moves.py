"""Server-side copy (CopyObject, UploadPartCopy above 5 GiB), touch, move
(copies confirmed, then the sources deleted in batches) and delete."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import math
from typing import Iterable, Iterator

from botocore import exceptions as bex

from reconcile.entry import Entry
from reconcile.errors import NotFound, NotSupported, Permanent, RemoteError, Transient
from reconcile.remotes.s3.body import MiB
from reconcile.remotes.s3.errors import MISSING_CODES, precondition_failed
from reconcile.remotes.s3.multipart import MAX_PARTS
from reconcile.remotes.s3.objects import Record, _etag, _holds

COPY_LIMIT = 5 * 1024**3  # CopyObject's own limit; above it UploadPartCopy
COPY_PART = 512 * MiB
DELETE_BATCH = 1000  # DeleteObjects' limit
DELETE_EARLY = 100  # a move's confirmed sources deleted this many at a time, while its copies go on


def chunks(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


class _NotAsRecorded(Exception):
    """a copy's source is not the version listed (CopySourceIfMatch failed)"""


class Moves:
    """S3Remote's copy, touch, move and delete; mkdir and rmdir do nothing."""

    def _copy_one(self, src: str, dst: str) -> Record:
        """server-side copy with our metadata passed explicitly; the returned
        record is the confirmed copy. NotFound when src is missing."""
        src_key, dst_key = self._key(src), self._key(dst)
        rec = self._recorded(src) or self._head_record(src)
        if rec is None:
            raise NotFound(f"cannot copy {src}: not found on {self.url}")
        size, src_etag, mtime_ns, digest, mode = rec
        meta = self._metadata(mtime_ns, digest, mode)
        # a block record (delta transfer) follows the object it describes, and
        # only that one: the copy then goes only from the ETag it was recorded with
        follows = self._blocks.wants(size) and self._blocks.tagged(src, {"etag": src_etag, "size": size})
        if_match = {"CopySourceIfMatch": f'"{src_etag}"'} if follows else {}
        try:
            if size > self.copy_threshold:
                etag = self._copy_multipart(src_key, dst_key, size, meta, if_match)
            else:
                etag = self._quick_copy(src_key, dst_key, meta, if_match) or self._client_copy(
                    src, dst, src_key, dst_key, meta, if_match)
        except NotFound:
            self._remember(src, None)  # our record was stale
            raise NotFound(f"cannot copy {src}: not found on {self.url}") from None
        except _NotAsRecorded:
            # rewritten since it was listed: copied afresh from what a HEAD says, its blocks unknown
            self._blocks.drop(src)
            self._remember(src, None)
            return self._copy_one(src, dst)
        if not etag:
            raise Transient(f"copy {src} to {dst}: the server did not confirm it")
        new = (size, etag, mtime_ns, digest, mode)
        self._remember(dst, new)
        if follows:
            self._blocks.moved(src, dst, new_tag={"etag": etag, "size": size})
        else:
            self._blocks.drop(dst)  # the record of what the copy replaced
        return new

    def _quick_copy(self, src_key: str, dst_key: str, meta: dict[str, str], if_match: dict[str, str]) -> str | None:
        """the copy's ETag through the fast path (quickcopy.py), or None: then through the client"""
        if self._quick is None or self._extra_args():
            return None
        return self._quick.copy(self.bucket, src_key, dst_key, meta, if_match.get("CopySourceIfMatch"))

    def _client_copy(self, src: str, dst: str, src_key: str, dst_key: str, meta: dict[str, str],
                     if_match: dict[str, str]) -> str:
        with self._errors(f"copy {src} to {dst}"):
            try:
                resp = self.client.copy_object(
                    Bucket=self.bucket, Key=dst_key, CopySource={"Bucket": self.bucket, "Key": src_key},
                    Metadata=meta, MetadataDirective="REPLACE", **if_match, **self._extra_args())
            except bex.ClientError as exc:
                raise _NotAsRecorded() if if_match and precondition_failed(exc) else exc from None
        return _etag((resp.get("CopyObjectResult") or {}).get("ETag"))

    def _copy_multipart(self, src_key: str, dst_key: str, size: int, meta: dict[str, str],
                        if_match: dict[str, str]) -> str:
        with self._errors(f"copy {src_key}"):
            upload_id = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=dst_key, Metadata=meta, **self._extra_args())["UploadId"]
        part = max(self.copy_part_size, math.ceil(size / MAX_PARTS))
        ranges = [(n + 1, o, min(o + part, size) - 1) for n, o in enumerate(range(0, size, part))]

        def one(n: int, first: int, last: int) -> dict:
            with self._errors(f"copy part {n} of {src_key}"):
                try:
                    resp = self.client.upload_part_copy(
                        Bucket=self.bucket, Key=dst_key, UploadId=upload_id, PartNumber=n,
                        CopySource={"Bucket": self.bucket, "Key": src_key}, CopySourceRange=f"bytes={first}-{last}",
                        **if_match)
                except bex.ClientError as exc:
                    raise _NotAsRecorded() if if_match and precondition_failed(exc) else exc from None
            return {"PartNumber": n, "ETag": resp["CopyPartResult"]["ETag"]}

        try:
            futures = [self._parts().submit(one, *r) for r in ranges]
            parts = [f.result() for f in futures]
            with self._errors(f"copy {src_key}"):
                resp = self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=dst_key, UploadId=upload_id, MultipartUpload={"Parts": parts})
        except BaseException:
            self._abort_quietly(dst_key, upload_id)  # a copy has nothing worth resuming
            raise
        return _etag(resp.get("ETag"))

    def touch(self, path: str, entry: Entry) -> None:
        """a new mtime in the object's metadata, no data sent (base.Remote.touch):
        CopyObject onto itself with REPLACE, its xxh3 and mode kept. Only onto
        the object whose ETag says it holds entry's xxh3 (CopySourceIfMatch)."""
        if entry.mtime_ns is None:
            return
        rec = self._recorded(path)
        if not _holds(rec, entry):
            rec = self._head_record(path)  # our record may be older than the object
            if not _holds(rec, entry):
                raise NotFound(f"cannot touch {path}: the object does not hold the content the plan saw")
        size, etag, _, digest, mode = rec
        key = self._key(path)
        meta = self._metadata(entry.mtime_ns, digest, mode)
        if size > self.copy_threshold:
            new_etag = self._copy_multipart(key, key, size, meta, {})
        else:
            with self._errors(f"touch {path}"):
                try:
                    resp = self.client.copy_object(
                        Bucket=self.bucket, Key=key, CopySource={"Bucket": self.bucket, "Key": key},
                        CopySourceIfMatch=f'"{etag}"', Metadata=meta, MetadataDirective="REPLACE",
                        **self._extra_args())
                except bex.ClientError as exc:
                    if precondition_failed(exc):
                        self._remember(path, None)
                        raise NotFound(f"cannot touch {path}: the object changed since it was listed") from None
                    raise
            new_etag = _etag((resp.get("CopyObjectResult") or {}).get("ETag"))
        if not new_etag:
            raise Transient(f"touch {path}: the server did not confirm it")
        self._remember(path, (size, new_etag, entry.mtime_ns, digest, mode))
        self._blocks.retag(path, size, {"etag": etag, "size": size}, {"etag": new_etag, "size": size})

    def move(self, src: str, dst: str) -> None:
        """a file, or a "directory" (every object under src/): copies confirmed
        first, then the sources deleted in batches."""
        if src == dst:
            if self.stat(src) is None:
                raise NotFound(f"cannot move {src}: not found on {self.url}")
            return
        try:
            self._copy_one(src, dst)
        except NotFound:
            pairs = self._dir_pairs(src, dst)
            if not pairs:
                raise NotFound(f"cannot move {src}: not found on {self.url}") from None
            self._move_pairs(pairs)
            return
        self._delete_keys([self._key(src)])
        self._remember(src, None)

    def _dir_pairs(self, src: str, dst: str) -> list[tuple[str, str]]:
        if dst.startswith(src + "/"):
            raise Permanent(f"cannot move folder {src} into itself ({dst})")
        src_key = self._key(src)
        pairs = []
        for page in self._pages(src_key + "/"):
            for obj in page:
                rel = self._rel(obj["Key"])
                if rel is not None:
                    pairs.append((rel, dst + rel[len(src):]))
                    self._note_listed(rel, obj)
        return pairs

    def _note_listed(self, rel: str, obj: dict) -> None:
        """a listed object the record has wrong is forgotten, so a copy HEADs it."""
        rec = self._recorded(rel)
        if rec is not None and (rec[0], rec[1]) != (int(obj.get("Size", 0)), _etag(obj.get("ETag"))):
            self._remember(rel, None)

    def move_many(self, pairs: list[tuple[str, str]]) -> None:
        """many file moves: parallel copies, then batched deletes of the sources
        whose copy was confirmed. Pairs must be independent (no dst is another
        pair's src): NotSupported otherwise (apply then reports the folder's
        move failed; a plan never moves a folder into itself).
        On a partial failure the first error is raised with .moved = the pairs
        done (source gone, target present)."""
        srcs = [s for s, _ in pairs]
        dsts = [d for _, d in pairs]
        if set(srcs) & set(dsts) or len(set(dsts)) != len(dsts) or len(set(srcs)) != len(srcs):
            raise NotSupported("move_many: the moves depend on each other; move them in order")
        self._move_pairs(list(pairs))

    def _move_pairs(self, pairs: list[tuple[str, str]]) -> None:
        """copies in parallel; the sources of confirmed copies deleted in
        batches of DELETE_EARLY while the other copies go on (one batch at the
        end had the server deleting alone, after every copy)"""
        futures = {self._io().submit(self._copy_one, s, d): (s, d) for s, d in pairs}
        moved, failed, confirmed, deleting = [], [], [], []
        with cf.ThreadPoolExecutor(2, thread_name_prefix="s3-delete") as deleter:
            for n, fut in enumerate(cf.as_completed(futures), 1):
                try:
                    fut.result()
                    moved.append(futures[fut])
                    confirmed.append(futures[fut][0])
                except RemoteError as exc:
                    failed.append(exc)
                if confirmed and (len(confirmed) >= DELETE_EARLY or n == len(futures)):
                    deleting.append(deleter.submit(self._delete_sources, confirmed))
                    confirmed = []
        moved.sort()
        for fut in deleting:
            fut.result()  # a delete that failed: raised as before, its sources still there
        if failed:
            exc = failed[0]
            exc.moved = moved  # type: ignore[attr-defined]
            raise exc

    def _delete_sources(self, srcs: list[str]) -> None:
        self._delete_keys([self._key(s) for s in srcs])
        for s in srcs:
            self._remember(s, None)

    def delete(self, path: str) -> None:
        try:
            key = self._key(path)
        except Permanent:
            return  # such a name can never be on S3
        with self._errors(f"delete {path}"):
            try:
                self.client.delete_object(Bucket=self.bucket, Key=key)
            except bex.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in MISSING_CODES:
                    raise
        self._remember(path, None)

    def delete_many(self, paths: Iterable[str]) -> None:
        """DeleteObjects, 1000 keys a request; missing ones are fine."""
        rels = []
        for p in paths:
            with contextlib.suppress(Permanent):
                self._key(p)
                rels.append(p)
        self._delete_keys([self._key(p) for p in rels])
        for p in rels:
            self._remember(p, None)

    def _delete_keys(self, keys: list[str]) -> None:
        first_error = None
        for batch in chunks(keys, DELETE_BATCH):
            with self._errors(f"delete {len(batch)} objects"):
                resp = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
            for err in resp.get("Errors", []) or []:
                if err.get("Code") in MISSING_CODES or first_error is not None:
                    continue
                fake = bex.ClientError({"Error": err, "ResponseMetadata": {}}, "DeleteObjects")
                first_error = self._map_client_error(fake, f"delete {err.get('Key')}")
        if first_error is not None:
            raise first_error

    def mkdir(self, path: str) -> None:
        """S3 has no directories: nothing to do."""

    def rmdir(self, path: str) -> None:
        """S3 has no directories: nothing to do."""
