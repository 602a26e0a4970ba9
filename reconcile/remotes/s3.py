"""S3 and S3-compatible stores (AWS, MinIO, SeaweedFS, Ceph, R2, B2).

Layout: s3://bucket[/prefix]; an object's key is prefix + "/" + relative path.
S3 has no directories: none are listed, mkdir/rmdir do nothing and empty
directories are not mirrored. Local names that are not valid UTF-8 cannot be
S3 keys: uploading one raises Permanent.

Every request costs the user money, so a run with nothing to do costs only
the listing. ListObjectsV2 returns no user metadata, so we keep a record
(state_dir/s3-record.msgpack) of key -> (size, etag, mtime_ns, xxh3, mode) for what
we wrote or looked at; a listed object whose size and ETag match it is known.
Only objects we have no record of get one HEAD, once.

Objects carry their mtime in user metadata "mtime" in rclone's format
(seconds since the epoch with a fraction), so a bucket filled by rclone is
recognised, plus our content hash "xxh3" (hex of xxh3_128). With --perms
the file mode goes in "mode" (octal st_mode, as rclone --metadata writes it).

boto3 is imported here only, so other remotes do not pay for it.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import contextlib
import hashlib
import heapq
import logging
import math
import os
import re
import socket
import threading
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import BinaryIO, Callable, Iterable, Iterator
from urllib.parse import urlsplit

import boto3
import msgpack
import xxhash
from botocore import exceptions as bex
from botocore.config import Config

from reconcile import portable
from reconcile.entry import DIR, FILE, Entry, is_temp_name
from reconcile.errors import (
    AuthError,
    ConfigError,
    NotFound,
    NotSupported,
    Permanent,
    ReconcileError,
    Refused,
    RemoteError,
    SourceChanged,
    Transient,
    Unreachable,
    UnresolvedHost,
)
from reconcile.blockmap import BlockMap, BlockStore, block_hash
from reconcile.hashing import hash_fd
from reconcile.statefile import write_private
from reconcile.remotes.base import Capabilities, Checkpoint, Progress, Remote, RemoteOptions, Sent, local_output

log = logging.getLogger(__name__)

MiB = 1 << 20
DEFAULT_TRANSFERS = 16
# An upload cut by a kill loses only the parts in flight (a stored part is
# listed on resume): files above the threshold go in parts, and one upload
# keeps at most RESUME_SLACK of parts in flight, whatever --transfers is.
RESUME_SLACK = 32 * MiB
DEFAULT_MULTIPART_THRESHOLD = RESUME_SLACK
DEFAULT_PART_SIZE = 8 * MiB
IN_MEMORY_MAX = 8 * MiB  # small bodies are read whole, so we can hash what we send
MAX_PARTS = 10_000
COPY_LIMIT = 5 * 1024**3  # CopyObject's own limit; above it UploadPartCopy
COPY_PART = 512 * MiB
DELETE_BATCH = 1000  # DeleteObjects' limit
MAX_KEY_BYTES = 1024
CHUNK = 1 << 20
METER_EVERY = 64 << 10  # progress (and --bwlimit) steps while a body is sent
RECORD_NAME = "s3-record.msgpack"
RECORD_VERSION = 1
SAVE_EVERY = 5000  # record changes between saves, so a killed run loses little

CRED_CODES = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired", "InvalidClientTokenId", "MissingSecurityHeader",
}
DENIED_CODES = {"AccessDenied", "AllAccessDisabled", "AccountProblem", "403", "Forbidden"}
REGION_CODES = {
    "PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException",
    "301", "Redirect",
}
MISSING_CODES = {"NoSuchKey", "NotFound", "404", "NoSuchUpload", "NoSuchVersion"}
BUSY_CODES = {
    "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling",
    "ThrottlingException", "RequestTimeTooSkewed", "OperationAborted", "500", "502", "503", "504",
}

# one record per object: (size, etag, mtime_ns or None, xxh3 bytes or None, st_mode or None)
Record = tuple[int, str, "int | None", "bytes | None", "int | None"]


# --- small pure helpers -------------------------------------------------------------


def format_mtime(ns: int) -> str:
    """rclone's format: decimal seconds with a fraction, exact to the ns."""
    if ns < 0:
        return "-" + format_mtime(-ns)
    sec, frac = divmod(ns, 1_000_000_000)
    return f"{sec}.{frac:09d}"


_MTIME_RE = re.compile(r"^(-?)([0-9]+)(?:\.([0-9]*))?$")


def parse_mtime(text: str | None) -> int | None:
    """seconds with a fraction (ours, rclone's) -> ns; None when absent or odd."""
    if not text:
        return None
    m = _MTIME_RE.match(text.strip())
    if m:
        ns = int(m[2]) * 1_000_000_000 + int(((m[3] or "") + "000000000")[:9])
        return -ns if m[1] else ns
    try:  # a float some other tool wrote, like "1.7e9"
        return int(Decimal(text.strip()) * 1_000_000_000)
    except (InvalidOperation, ValueError, OverflowError):
        return None


def parse_hash(text: str | None) -> bytes | None:
    if not text:
        return None
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError:
        return None
    return raw if len(raw) == 16 else None


def parse_mode(text: str | None) -> int | None:
    """rclone's "mode" metadata: the st_mode in octal."""
    try:
        return int(text, 8) if text else None
    except ValueError:
        return None


def parse_url(url: str) -> tuple[str, str]:
    """s3://bucket[/prefix] -> (bucket, prefix without slashes at its ends)."""
    if not url.lower().startswith("s3://"):
        raise ConfigError(f"{url!r} is not an S3 URL: use s3://bucket[/prefix]")
    bucket, _, prefix = url[5:].partition("/")
    if "@" in bucket:  # never echoed: it may hold a key
        raise ConfigError("an S3 URL carries no credentials: remove the 'KEY:SECRET@' part and use "
                          "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws/credentials or --profile")
    if not bucket:
        raise ConfigError(f"{url!r} names no bucket: use s3://bucket[/prefix]")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{2,62}", bucket):
        raise ConfigError(f"{bucket!r} is not a valid bucket name: use 3-63 letters, digits, '.', '-'")
    prefix = prefix.strip("/")
    if "//" in prefix:
        raise ConfigError(f"prefix {prefix!r} in {url!r} has an empty part ('//')")
    return bucket, prefix


def valid_rel(rel: str) -> bool:
    """keys another tool wrote that cannot be one of our relative paths."""
    if not rel or rel.endswith("/"):  # "dir/" markers of other tools
        return False
    parts = rel.split("/")
    return not any(p in ("", ".", "..") for p in parts) and not is_temp_name(rel)


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


def chunks(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


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


def _is_aws(endpoint: str | None) -> bool:
    host = (endpoint or "").split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0].lower()
    return host.endswith(".amazonaws.com") or host.endswith(".amazonaws.com.cn")


# --- client -------------------------------------------------------------------------


def check_endpoint(url: str | None, where: str) -> None:
    """an endpoint with user info (http://key:secret@host) would put the secret
    in messages and in the state folder's record: refused, never echoed"""
    if url and "@" in urlsplit(url).netloc:
        host = urlsplit(url).netloc.rpartition("@")[2]
        raise ConfigError(f"{where} holds a user name or key before '@' (…@{host}): remove it and give the "
                          "keys through AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or --profile")
    if url and urlsplit(url).scheme.lower() not in ("http", "https"):
        raise ConfigError(f"{where} {url!r} is not an http:// or https:// URL: "
                          "write it with its scheme, like http://nas.local:8333 or https://s3.example.com")


def _endpoint_from_env() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


_LOADER: list = []  # botocore's data loader, shared by the sessions of this process


def _session(profile: str | None):
    """a new session (credentials are read afresh: a long `reconcile watch`
    sees a rotated key), sharing one loader of botocore's service models:
    loading them again cost each run of `reconcile watch` about 0.3 s"""
    import botocore.session

    core = botocore.session.get_session()
    if _LOADER:
        core.register_component("data_loader", _LOADER[0])
    else:
        _LOADER.append(core.get_component("data_loader"))
    session = boto3.Session(botocore_session=core, profile_name=profile)
    core.get_scoped_config()  # an unknown profile fails here, as boto3.Session(profile_name=) does
    return session


def make_client(options: RemoteOptions, pool: int):
    try:
        session = _session(options.profile or None)
    except bex.ProfileNotFound:
        raise ConfigError(f"AWS profile {options.profile!r} not found in ~/.aws/config or ~/.aws/credentials") from None
    endpoint = options.s3_endpoint or None
    for where, url in (("--s3-endpoint", endpoint), ("AWS_ENDPOINT_URL", _endpoint_from_env())):
        check_endpoint(url, where)
    attempts = int(options.extra.get("s3_attempts", 3))  # the engine retries Transient itself

    def build(path_style: bool):
        cfg = Config(
            # always signed: bodies are read once to sign, then to send (MeteredBody counts on that)
            s3={"addressing_style": "path", "payload_signing_enabled": True} if path_style
            else {"payload_signing_enabled": True},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=pool,
            retries={"mode": "standard", "total_max_attempts": attempts},
            connect_timeout=10,
            read_timeout=120,
            tcp_keepalive=True,
        )
        # a custom endpoint needs some region to sign with; AWS picks its own.
        region = session.region_name or ("us-east-1" if path_style else None)
        try:
            return session.client("s3", endpoint_url=endpoint, region_name=region, config=cfg)
        except ValueError as exc:
            raise ConfigError(f"bad S3 endpoint {endpoint!r}: {exc}") from None

    if endpoint or _endpoint_from_env():
        client = build(True)
    else:
        client = build(False)
        # an endpoint from the profile's config: S3-compatible servers want path style.
        if "amazonaws.com" not in (client.meta.endpoint_url or ""):
            client = build(True)
    # registered on the general name so it runs after botocore's own PutObject/UploadPart handler.
    client.meta.events.register("before-call.s3", _drop_expect_header)
    return client


def _drop_expect_header(params: dict, **_) -> None:
    """no "Expect: 100-continue": after a 0-byte PUT with it, SeaweedFS 4.48
    leaves a stray reply on the kept-alive connection and the next request
    stalls until its read timeout (measured: every one of 20)."""
    params.get("headers", {}).pop("Expect", None)


# --- the remote ---------------------------------------------------------------------


class S3Remote(Remote):
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

    # --- keys and errors -------------------------------------------------------------

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

    @contextlib.contextmanager
    def _errors(self, what: str):
        """botocore's exceptions never leave this module."""
        try:
            yield
        except bex.ClientError as exc:
            raise self._map_client_error(exc, what) from None
        except (bex.EndpointConnectionError, bex.ConnectTimeoutError) as exc:
            if _lies_under(exc, socket.gaierror):
                host = urlsplit(self.endpoint).hostname or self.endpoint
                raise UnresolvedHost(f"{what}: cannot resolve host {host}: {_reason(exc)}", host) from None
            if _lies_under(exc, ConnectionRefusedError):
                raise Refused(f"{what}: cannot reach the S3 endpoint {self.endpoint}: {_reason(exc)}: "
                              "is the server running there, and is that its port?") from None
            raise Unreachable(f"{what}: cannot reach the S3 endpoint {self.endpoint}: {_reason(exc)}") from None
        except (bex.ConnectionError, bex.HTTPClientError, bex.ResponseStreamingError,
                bex.IncompleteReadError) as exc:
            inner = getattr(exc, "kwargs", {}).get("error")
            if isinstance(inner, ReconcileError):
                raise inner from None  # our own body refused to go on (the file changed)
            raise Transient(f"{what}: connection to {self.endpoint} failed: {_reason(exc)}") from None
        except (bex.NoCredentialsError, bex.PartialCredentialsError, bex.CredentialRetrievalError,
                bex.UnknownCredentialError):
            raise AuthError(
                "no usable AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "use ~/.aws/credentials, or pass --profile"
            ) from None
        except bex.NoRegionError:
            raise ConfigError("no AWS region: set AWS_DEFAULT_REGION or the profile's region") from None
        except bex.BotoCoreError as exc:
            raise Permanent(f"{what}: {type(exc).__name__}: {exc}") from None
        except Exception as exc:  # urllib3 errors can escape while a body streams
            if type(exc).__module__.startswith("urllib3"):
                raise Transient(f"{what}: connection to {self.endpoint} failed: {exc}") from None
            raise

    def _map_client_error(self, exc: bex.ClientError, what: str) -> Exception:
        err = exc.response.get("Error", {}) or {}
        meta = exc.response.get("ResponseMetadata", {}) or {}
        code = str(err.get("Code", "") or "")
        status = int(meta.get("HTTPStatusCode", 0) or 0)
        bucket = self.bucket
        if code == "NoSuchBucket":
            return ConfigError(f"bucket {bucket!r} does not exist at {self.endpoint}: create it first, or check the name")
        if code in CRED_CODES:
            return AuthError(
                f"S3 rejected the credentials for bucket {bucket!r} ({code}): "
                "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or --profile"
            )
        if code in DENIED_CODES or status == 403:
            return AuthError(
                f"access denied to bucket {bucket!r} while trying to {what}: "
                "the credentials lack permission; check the bucket policy or use another --profile"
            )
        if code in REGION_CODES or status == 301:
            region = (meta.get("HTTPHeaders", {}) or {}).get("x-amz-bucket-region") or err.get("Region")
            hint = f"set AWS_DEFAULT_REGION={region}" if region else "set AWS_DEFAULT_REGION to the bucket's region"
            return ConfigError(f"bucket {bucket!r} is in another region: {hint} or the profile's region")
        if code == "InvalidBucketName":
            return ConfigError(f"{bucket!r} is not a valid bucket name")
        if code in MISSING_CODES or status == 404:
            return NotFound(f"{what}: not found")
        if code in BUSY_CODES or status in (408, 429) or status >= 500:
            return Transient(f"{what}: the server is busy or failing ({code or status})")
        if code in ("NotImplemented", "501"):
            return NotSupported(f"{what}: the server does not implement this ({code})")
        return Permanent(f"{what}: {code or status}: {err.get('Message', '')}".rstrip(": "))

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

    # --- the record ------------------------------------------------------------------

    def _record_path(self) -> str | None:
        sd = self.options.state_dir
        return os.path.join(sd, RECORD_NAME) if sd else None

    def _record_header(self) -> dict:
        return {"v": RECORD_VERSION, "endpoint": self.endpoint, "bucket": self.bucket, "prefix": self.prefix}

    def _load_record(self) -> None:
        path = self._record_path()
        if not path:
            return
        try:
            with open(path, "rb") as f:
                data = msgpack.unpackb(f.read(), raw=False, strict_map_key=False)
        except FileNotFoundError:
            return
        except (OSError, ValueError, msgpack.UnpackException) as exc:
            log.warning("ignoring unreadable S3 record %s: %s", path, exc)
            return
        if not isinstance(data, dict) or data.get("head") != self._record_header():
            return  # another endpoint/bucket/prefix, or an older format: start over
        # records written before modes were kept have four fields
        self._record = {k: (v[0], v[1], v[2], v[3], v[4] if len(v) > 4 else None)
                        for k, v in data.get("objects", {}).items()}

    def _remember(self, rel: str, rec: Record | None) -> None:
        with self._lock:
            if rec is None:
                self._record.pop(rel, None)
            else:
                self._record[rel] = rec
            if self._touched is not None:
                self._touched[rel] = rec
            self._changes += 1
            # a save writes the whole record: on big ones, save after each 5% of changes.
            due = self._changes >= max(SAVE_EVERY, len(self._record) // 20)
        if due:
            self.save_record()

    def _recorded(self, rel: str) -> Record | None:
        with self._lock:
            return self._record.get(rel)

    def save_record(self) -> None:
        """tmp + fsync + rename, mode 0600: a killed run leaves the old or the new."""
        path = self._record_path()
        if not path:
            return
        with self._save_lock:
            with self._lock:
                if not self._changes and os.path.exists(path):
                    return
                blob = msgpack.packb(
                    {"head": self._record_header(), "objects": {k: list(v) for k, v in self._record.items()}},
                    use_bin_type=True,
                )
                self._changes = 0
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            try:
                write_private(path, blob)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(f"{path}.tmp")
                log.warning("cannot save S3 record %s: %s", path, exc.strerror)

    # --- listing ---------------------------------------------------------------------

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

    # --- upload ----------------------------------------------------------------------

    def _extra_args(self) -> dict:
        args = {}
        if self.options.storage_class:
            args["StorageClass"] = self.options.storage_class
        if self.options.sse:
            if self.options.sse not in ("AES256", "aws:kms"):
                raise ConfigError(f"--s3-sse {self.options.sse!r}: use AES256 or aws:kms")
            args["ServerSideEncryption"] = self.options.sse
        if self.options.sse_kms_key_id:
            if self.options.sse != "aws:kms":
                raise ConfigError("--s3-sse-kms-key-id needs --s3-sse aws:kms")
            args["SSEKMSKeyId"] = self.options.sse_kms_key_id
        return args

    @staticmethod
    def _metadata(mtime_ns: int | None, digest: bytes | None, mode: int | None = None) -> dict[str, str]:
        meta = {}
        if mtime_ns is not None:
            meta["mtime"] = format_mtime(mtime_ns)
        if digest is not None:
            meta["xxh3"] = digest.hex()
        if mode:
            meta["mode"] = format(mode, "o")  # rclone's --metadata format: octal st_mode
        return meta

    def _mode_of(self, entry: Entry) -> int | None:
        return entry.mode or None if self.options.extra.get("perms") else None

    def upload(self, local_path: str, path: str, entry: Entry, progress: Progress | None = None,
               resume: dict | None = None, checkpoint: Checkpoint | None = None) -> Sent:
        key = self._key(path)
        try:
            f = open(local_path, "rb")
        except FileNotFoundError:
            raise NotFound(f"local file {local_path} vanished") from None
        except OSError as exc:
            raise Permanent(f"cannot read {local_path}: {exc.strerror}") from None
        reused, bmap = 0, None
        with f:
            before = os.fstat(f.fileno())
            if before.st_size != entry.size:
                raise SourceChanged(f"{path} changed size since it was scanned; left for the next run")
            if before.st_size > self.multipart_threshold:
                bmap = self._blocks.map_new(f.fileno(), entry.size, entry.hash, path)
                reuse = self._reusable_parts(path, entry.size, bmap)
                try:
                    etag, digest, reused = self._upload_multipart(f.fileno(), key, path, entry, progress, resume,
                                                                  checkpoint, bmap, reuse)
                except _NotTheBlocks:
                    # the old object changed since its blocks were recorded: send it whole
                    self._blocks.drop(path)
                    etag, digest, reused = self._upload_multipart(f.fileno(), key, path, entry, progress, None,
                                                                  checkpoint, bmap, None)
            else:
                if resume and resume.get("upload_id"):
                    self._abort_quietly(resume.get("key", key), resume["upload_id"])  # superseded
                etag, digest = self._upload_single(f, key, path, entry, progress)
        self._remember(path, (entry.size, etag, entry.mtime_ns, digest, self._mode_of(entry)))
        if bmap is not None:
            self._blocks.put(path, bmap, {"etag": etag, "size": entry.size})
        return Sent(path, FILE, entry.size, entry.mtime_ns, hash=digest, reused=reused)

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

    def _upload_single(self, f, key: str, path: str, entry: Entry, progress: Progress | None) -> tuple[str, bytes]:
        fd = f.fileno()
        if entry.size <= IN_MEMORY_MAX:
            body = pread_exact(fd, entry.size, 0) if entry.size else b""
            digest = xxhash.xxh3_128_digest(body)
            if entry.hash is not None and digest != entry.hash:
                raise SourceChanged(f"{path} changed since it was scanned; left for the next run")
            md5 = hashlib.md5(body, usedforsecurity=False)
        else:
            # streamed: the body checks itself and fails the request before its
            # last byte if the file no longer hashes to what the metadata says
            digest = entry.hash or hash_fd(fd, entry.size, path)
            body = VerifiedBody(fd, entry.size, digest, path, progress)
            md5 = _file_md5(fd, entry.size)
        before = os.fstat(fd)
        # Content-MD5: a server that got fewer bytes than it was told (a PUT cut
        # after its headers) must refuse the object; SeaweedFS keeps it otherwise
        with self._errors(f"upload {path}"):
            resp = self.client.put_object(Bucket=self.bucket, Key=key,
                                          Body=BytesBody(body, progress) if isinstance(body, bytes) else body,
                                          ContentMD5=base64.b64encode(md5.digest()).decode(),
                                          Metadata=self._metadata(entry.mtime_ns, digest, self._mode_of(entry)), **self._extra_args())
        if isinstance(body, VerifiedBody) and _changed(before, os.fstat(fd)):
            # the object holds a mix; its mtime is the scanned one, so the next run sends it again.
            raise SourceChanged(f"{path} changed while being uploaded; left for the next run")
        return _etag(resp.get("ETag")), digest

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
                resp = self.client.upload_part_copy(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=n,
                    CopySource={"Bucket": self.bucket, "Key": key}, CopySourceIfMatch=f'"{etag}"',
                    CopySourceRange=f"bytes={offset}-{offset + length - 1}")
        except NotFound:
            raise _NotTheBlocks() from None
        except bex.ClientError as exc:
            if (exc.response.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode") == 412:
                raise _NotTheBlocks() from None
            raise
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
            if self.options.sse == "aws:kms" or not re.fullmatch(r"[0-9a-f]{32}", etag):
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

    # --- copy, move, delete ----------------------------------------------------------

    def _copy_one(self, src: str, dst: str) -> Record:
        """server-side copy with our metadata passed explicitly; the returned
        record is the confirmed copy. NotFound when src is missing."""
        src_key, dst_key = self._key(src), self._key(dst)
        rec = self._recorded(src) or self._head_record(src)
        if rec is None:
            raise NotFound(f"cannot copy {src}: not found on {self.url}")
        size, _, mtime_ns, digest, mode = rec
        meta = self._metadata(mtime_ns, digest, mode)
        try:
            if size > self.copy_threshold:
                etag = self._copy_multipart(src_key, dst_key, size, meta)
            else:
                with self._errors(f"copy {src} to {dst}"):
                    resp = self.client.copy_object(
                        Bucket=self.bucket, Key=dst_key, CopySource={"Bucket": self.bucket, "Key": src_key},
                        Metadata=meta, MetadataDirective="REPLACE", **self._extra_args())
                etag = _etag((resp.get("CopyObjectResult") or {}).get("ETag"))
        except NotFound:
            self._remember(src, None)  # our record was stale
            raise NotFound(f"cannot copy {src}: not found on {self.url}") from None
        if not etag:
            raise Transient(f"copy {src} to {dst}: the server did not confirm it")
        new = (size, etag, mtime_ns, digest, mode)
        self._remember(dst, new)
        return new

    def _copy_multipart(self, src_key: str, dst_key: str, size: int, meta: dict[str, str]) -> str:
        with self._errors(f"copy {src_key}"):
            upload_id = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=dst_key, Metadata=meta, **self._extra_args())["UploadId"]
        part = max(self.copy_part_size, math.ceil(size / MAX_PARTS))
        ranges = [(n + 1, o, min(o + part, size) - 1) for n, o in enumerate(range(0, size, part))]

        def one(n: int, first: int, last: int) -> dict:
            with self._errors(f"copy part {n} of {src_key}"):
                resp = self.client.upload_part_copy(
                    Bucket=self.bucket, Key=dst_key, UploadId=upload_id, PartNumber=n,
                    CopySource={"Bucket": self.bucket, "Key": src_key}, CopySourceRange=f"bytes={first}-{last}")
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
            new_etag = self._copy_multipart(key, key, size, meta)
        else:
            with self._errors(f"touch {path}"):
                try:
                    resp = self.client.copy_object(
                        Bucket=self.bucket, Key=key, CopySource={"Bucket": self.bucket, "Key": key},
                        CopySourceIfMatch=f'"{etag}"', Metadata=meta, MetadataDirective="REPLACE",
                        **self._extra_args())
                except bex.ClientError as exc:
                    if (exc.response.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode") == 412:
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
        futures = {self._io().submit(self._copy_one, s, d): (s, d) for s, d in pairs}
        moved, failed = [], []
        for fut in cf.as_completed(futures):
            try:
                fut.result()
                moved.append(futures[fut])
            except RemoteError as exc:
                failed.append(exc)
        moved.sort()
        self._delete_keys([self._key(s) for s, _ in moved])
        for s, _ in moved:
            self._remember(s, None)
        if failed:
            exc = failed[0]
            exc.moved = moved  # type: ignore[attr-defined]
            raise exc

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

    def close(self) -> None:
        with self._pool_lock:
            pools, self._io_pool, self._part_pool = [self._io_pool, self._part_pool], None, None
        for p in pools:
            if p is not None:
                p.shutdown(wait=True, cancel_futures=True)
        self.save_record()


class _NotTheBlocks(Exception):
    """the object under the key is no longer the one whose blocks were recorded"""


@dataclass
class _Reuse:
    etag: str  # of the old object, as recorded with its blocks
    parts: set[int]  # part numbers the old object holds at the same place


def _changed(before: os.stat_result, after: os.stat_result) -> bool:
    return (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns)


def _holds(rec: Record | None, entry: Entry) -> bool:
    """the recorded object is entry's size and content (by our xxh3 metadata)"""
    return rec is not None and rec[0] == entry.size and rec[3] is not None and rec[3] == entry.hash


def _etag(value: str | None) -> str:
    return (value or "").strip('"')


def _total_size(resp: dict, offset: int) -> int:
    rng = resp.get("ContentRange") or ""
    if "/" in rng and rng.rsplit("/", 1)[1].isdigit():
        return int(rng.rsplit("/", 1)[1])
    return offset + int(resp.get("ContentLength", 0))


def _lies_under(exc: BaseException, kind: type[BaseException]) -> bool:
    """whether an exception of kind (socket.gaierror, ConnectionRefusedError)
    lies under botocore's connection error."""
    seen: set[int] = set()
    todo: list = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, kind):
            return True
        nested = [e.__cause__, e.__context__, getattr(e, "reason", None), *getattr(e, "args", ()),
                  *(getattr(e, "kwargs", None) or {}).values()]
        todo += [n for n in nested if isinstance(n, BaseException)]
    return False


def _reason(exc: Exception) -> str:
    """botocore's message without the URL's query (signatures live there)."""
    text = str(exc)
    return re.sub(r"\?[^\s\"']*", "", text)
