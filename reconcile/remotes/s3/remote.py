"""S3Remote: the remote contract over the parts of this package, plus keys,
thread pools, download and cleanup."""

from __future__ import annotations

import concurrent.futures as cf
import threading
from typing import BinaryIO

from reconcile.entry import FILE, Entry
from reconcile.errors import NotSupported, Permanent, SourceChanged
from reconcile.blockmap import BlockStore
from reconcile.remotes.base import Capabilities, Progress, Remote, RemoteOptions, local_output
from reconcile.remotes.s3.client import _is_aws, make_client
from reconcile.remotes.s3.errors import Errors
from reconcile.remotes.s3.listing import Listing
from reconcile.remotes.s3.moves import COPY_LIMIT, COPY_PART, Moves
from reconcile.remotes.s3.quickcopy import QuickCopy
from reconcile.remotes.s3.multipart import DEFAULT_MULTIPART_THRESHOLD, DEFAULT_PART_SIZE, Multipart
from reconcile.remotes.s3.objects import MAX_KEY_BYTES, Record, parse_hash, parse_mtime, parse_url, valid_rel
from reconcile.remotes.s3.record import ObjectRecord
from reconcile.remotes.s3.upload import Upload

DEFAULT_TRANSFERS = 16

CHUNK = 1 << 20


class S3Remote(ObjectRecord, Listing, Upload, Multipart, Moves, Errors, Remote):
    NAME = "S3"
    default_transfers = DEFAULT_TRANSFERS
    CAPABILITIES = Capabilities(
        server_move=True,
        dir_move=False,
        empty_dirs=False,
        case_insensitive=False,
        mtime_precision_ns=1,
        symlinks=False,
        set_mtime=True,
        delta=True,
        resumable=True,
        utf8_names=True,
    )

    def __init__(self, bucket: str, prefix: str, options: RemoteOptions, client=None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self.options = options
        self._extra_args()  # a bad --s3-sse is exit 2 before any request, not a failed upload
        self.transfers = options.transfers or self.default_transfers
        self.part_workers = int(options.extra.get("part_concurrency", min(self.transfers, 8)))
        # engine threads + our copy/head pool + our part pool, each on its own connection.
        pool = 2 * self.transfers + self.part_workers
        self.client = client or make_client(options, pool)
        self.endpoint = self.client.meta.endpoint_url
        # a folder move's copies through a lighter path where it applies (quickcopy.py)
        self._quick = QuickCopy.for_client(self.client) if options.extra.get("quick_copy", True) else None
        self.multipart_threshold = int(options.extra.get("multipart_threshold", DEFAULT_MULTIPART_THRESHOLD))
        self.part_size = int(options.extra.get("part_size", DEFAULT_PART_SIZE))
        self.copy_threshold = int(options.extra.get("copy_threshold", COPY_LIMIT))
        self.copy_part_size = int(options.extra.get("copy_part_size", COPY_PART))
        # AWS documents byte order for listings; others (SeaweedFS) may not keep it.
        order = options.extra.get("list_order") or ("bytes" if _is_aws(self.endpoint) else "unknown")
        self.byte_ordered = order == "bytes"
        self._io_pool: cf.ThreadPoolExecutor | None = None
        self._part_pool: cf.ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._lock = threading.Lock()  # guards the record
        self._save_lock = threading.Lock()
        self._record: dict[str, Record] = {}
        self._touched: dict[str, Record | None] | None = None  # changes made while listing
        self._blocks = BlockStore(options.state_dir)
        self._changes = 0
        self._load_record()

    @classmethod
    def from_url(cls, url: str, options: RemoteOptions) -> "S3Remote":
        bucket, prefix = parse_url(url)
        return cls(bucket, prefix, options)

    # --- keys ----------------------------------------------------------------------------

    def _key(self, path: str) -> str:
        try:
            raw = path.encode("utf-8")
        except UnicodeEncodeError:
            shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            raise Permanent(
                f"{shown}: the name is not valid UTF-8 and S3 keys must be; rename it to mirror it to S3"
            ) from None
        key = f"{self.prefix}/{path}" if self.prefix else path
        if len(raw) + len(self.prefix) + 1 > MAX_KEY_BYTES:
            raise Permanent(f"{path}: the S3 key would exceed {MAX_KEY_BYTES} bytes")
        return key

    @property
    def _list_prefix(self) -> str:
        return self.prefix + "/" if self.prefix else ""

    def _rel(self, key: str) -> str | None:
        pre = self._list_prefix
        if not key.startswith(pre):
            return None
        rel = key[len(pre):]
        return rel if valid_rel(rel) else None

    # --- pools -----------------------------------------------------------------------

    def _io(self) -> cf.ThreadPoolExecutor:
        """HEADs and copies; tasks here never submit more tasks here."""
        with self._pool_lock:
            if self._io_pool is None:
                self._io_pool = cf.ThreadPoolExecutor(self.transfers, thread_name_prefix="s3-io")
            return self._io_pool

    def _parts(self) -> cf.ThreadPoolExecutor:
        """multipart parts, shared by all uploads so memory stays workers x part size."""
        with self._pool_lock:
            if self._part_pool is None:
                self._part_pool = cf.ThreadPoolExecutor(self.part_workers, thread_name_prefix="s3-part")
            return self._part_pool

    # --- download --------------------------------------------------------------------

    def download(self, path: str, local_path: str | BinaryIO, progress: Progress | None = None, offset: int = 0,
                 limit: int | None = None) -> Entry:
        key = self._key(path)
        kw = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            with self._errors(f"download {path}"):
                resp = self.client.get_object(Bucket=self.bucket, Key=key, **kw)
        except Permanent:
            if offset:  # InvalidRange: nothing left past offset
                e = self.stat(path)
                if e is not None and e.kind == FILE and e.size <= offset:
                    return e
            raise
        meta = resp.get("Metadata", {}) or {}
        total = _total_size(resp, offset)
        if limit is not None and total > limit:
            resp["Body"].close()
            raise SourceChanged(f"{path} is {total} bytes on the server, not the {limit} listed")
        try:
            output = local_output(local_path, offset)
        except OSError as exc:
            resp["Body"].close()
            raise Permanent(f"cannot write {local_path}: {exc.strerror}") from None
        with output as out, self._errors(f"download {path}"):
            out.seek(offset)
            for chunk in resp["Body"].iter_chunks(CHUNK):
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise Permanent(f"cannot write {local_path}: {exc.strerror}") from None
                if progress:
                    progress(len(chunk))
        return Entry(path, FILE, total, parse_mtime(meta.get("mtime")), hash=parse_hash(meta.get("xxh3")))

    # --- cleanup ---------------------------------------------------------------------

    def remove_temp_files(self, keep: frozenset[str] = frozenset()) -> int:
        """abort multipart uploads under our prefix, except the upload ids in keep."""
        count = 0
        kw: dict = {"Bucket": self.bucket, "Prefix": self._list_prefix}
        try:
            while True:
                with self._errors(f"list uploads in {self.url}"):
                    resp = self.client.list_multipart_uploads(**kw)
                for up in resp.get("Uploads", []) or []:
                    if up["UploadId"] not in keep and self._abort_quietly(up["Key"], up["UploadId"]):
                        count += 1
                if not resp.get("IsTruncated"):
                    return count
                kw["KeyMarker"] = resp.get("NextKeyMarker", "")
                kw["UploadIdMarker"] = resp.get("NextUploadIdMarker", "")
        except NotSupported:
            return count

    def delta_note(self) -> str:
        return "only their changed blocks are sent, the rest copied from the old object (UploadPartCopy)"

    def close(self) -> None:
        with self._pool_lock:
            pools, self._io_pool, self._part_pool = [self._io_pool, self._part_pool], None, None
        for p in pools:
            if p is not None:
                p.shutdown(wait=True, cancel_futures=True)
        self.save_record()


def _total_size(resp: dict, offset: int) -> int:
    rng = resp.get("ContentRange") or ""
    if "/" in rng and rng.rsplit("/", 1)[1].isdigit():
        return int(rng.rsplit("/", 1)[1])
    return offset + int(resp.get("ContentLength", 0))
