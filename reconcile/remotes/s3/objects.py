"""What an S3 object carries for us: its key (parse_url, valid_rel), the
metadata we write in rclone's format (mtime, xxh3, mode), and the Record
we keep of it in the state folder (record.py)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from reconcile.entry import Entry, is_temp_name
from reconcile.errors import ConfigError

MAX_KEY_BYTES = 1024

# one record per object: (size, etag, mtime_ns or None, xxh3 bytes or None, st_mode or None)
Record = tuple[int, str, "int | None", "bytes | None", "int | None"]


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


def _holds(rec: Record | None, entry: Entry) -> bool:
    """the recorded object is entry's size and content (by our xxh3 metadata)"""
    return rec is not None and rec[0] == entry.size and rec[3] is not None and rec[3] == entry.hash


def _etag(value: str | None) -> str:
    return (value or "").strip('"')
