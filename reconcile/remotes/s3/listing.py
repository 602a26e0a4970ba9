"""Listing: ListObjectsV2 pages put in byte order, one HEAD for each object
the record does not know; stat."""

from __future__ import annotations

import concurrent.futures as cf
import heapq
from typing import Iterator

from reconcile.entry import DIR, FILE, Entry
from reconcile.errors import NotFound, Permanent, Transient
from reconcile.remotes.s3.objects import Record, _etag, parse_hash, parse_mode, parse_mtime


class ListOrder:
    """puts a listing into byte order (entry.sort_key; files only, so the raw
    path). AWS lists in byte order. SeaweedFS lists folder by folder, so
    "a/x" comes before "a-b" there, while "a-b" < "a/x" in bytes.

    After key K is listed, every later key is greater than K's first path
    component in either order (byte order, or folder by folder with names
    compared as bytes), so whatever sorts at or below it can go out. That
    holds back at most one top-level folder's entries; with a byte-ordered
    server nothing is held back.
    """

    def __init__(self, byte_ordered: bool) -> None:
        self.byte_ordered = byte_ordered
        self.heap: list[tuple[bytes, Entry]] = []
        self.last: bytes | None = None

    def push(self, entry: Entry) -> Iterator[Entry]:
        key = entry.path.encode("utf-8")
        if self.last is not None and key <= self.last:
            raise Permanent(f"the server listed {entry.path!r} out of order: cannot mirror safely")
        heapq.heappush(self.heap, (key, entry))
        bound = key if self.byte_ordered else key.split(b"/", 1)[0]
        while self.heap and self.heap[0][0] <= bound:
            self.last, out = heapq.heappop(self.heap)
            yield out

    def flush(self) -> Iterator[Entry]:
        while self.heap:
            self.last, out = heapq.heappop(self.heap)
            yield out


class Listing:
    """S3Remote's listing and stat."""

    def _pages(self, prefix: str, max_keys: int | None = None) -> Iterator[list[dict]]:
        token = None
        while True:
            kw: dict = {"Bucket": self.bucket, "Prefix": prefix}
            if token:
                kw["ContinuationToken"] = token
            if max_keys:
                kw["MaxKeys"] = max_keys
            with self._errors(f"list {self.url}"):
                resp = self.client.list_objects_v2(**kw)
            yield resp.get("Contents", []) or []
            if max_keys or not resp.get("IsTruncated"):
                return
            token = resp.get("NextContinuationToken")
            if not token:
                raise Transient(f"list {self.url}: truncated listing without a continuation token")

    def list(self) -> Iterator[Entry]:
        """ListObjectsV2 pages only; HEAD just the objects we have no record of."""
        fresh: dict[str, Record] = {}
        order = ListOrder(self.byte_ordered)
        with self._lock:
            self._touched = {}
        try:
            for page in self._pages(self._list_prefix):
                for entry in self._page_entries(page, fresh):
                    yield from order.push(entry)
            yield from order.flush()
        except BaseException:
            with self._lock:
                self._touched = None
            raise
        self._prune(fresh)

    def _page_entries(self, page: list[dict], fresh: dict[str, Record]) -> list[Entry]:
        slots: list[tuple[str, Record | None]] = []
        unknown: dict[str, cf.Future] = {}
        for obj in page:
            rel = self._rel(obj["Key"])
            if rel is None:
                continue
            size, etag = int(obj.get("Size", 0)), _etag(obj.get("ETag"))
            rec = self._recorded(rel)
            if rec is not None and rec[0] == size and rec[1] == etag:
                slots.append((rel, rec))
            else:
                slots.append((rel, None))
                unknown[rel] = self._io().submit(self._head_record, rel)
        entries = []
        for rel, rec in slots:
            if rec is None:
                rec = unknown[rel].result()
                if rec is None:
                    continue  # deleted between list and head
                self._remember(rel, rec)
            fresh[rel] = rec
            entries.append(Entry(rel, FILE, rec[0], rec[2], mode=rec[4] or 0, hash=rec[3]))
        return entries

    def _prune(self, fresh: dict[str, Record]) -> None:
        """after a full listing the record holds only what exists (plus later writes)."""
        with self._lock:
            touched, self._touched = self._touched or {}, None
            for rel, rec in touched.items():
                if rec is None:
                    fresh.pop(rel, None)
                else:
                    fresh[rel] = rec
            if fresh.keys() != self._record.keys():
                self._changes += 1
            self._record = fresh
        self.save_record()

    def _head(self, key: str) -> dict | None:
        try:
            with self._errors(f"stat {key}"):
                return self.client.head_object(Bucket=self.bucket, Key=key)
        except NotFound:
            return None

    def _head_record(self, rel: str) -> Record | None:
        head = self._head(self._key(rel))
        if head is None:
            return None
        meta = head.get("Metadata", {}) or {}
        return (int(head.get("ContentLength", 0)), _etag(head.get("ETag")),
                parse_mtime(meta.get("mtime")), parse_hash(meta.get("xxh3")), parse_mode(meta.get("mode")))

    def stat(self, path: str) -> Entry | None:
        try:
            key = self._key(path)
        except Permanent:
            return None
        rec = self._head_record(path)
        if rec is not None:
            self._remember(path, rec)
            return Entry(path, FILE, rec[0], rec[2], mode=rec[4] or 0, hash=rec[3])
        # a "directory" is a prefix that holds objects.
        for page in self._pages(key + "/", max_keys=1):
            if page:
                return Entry(path, DIR)
        return None
