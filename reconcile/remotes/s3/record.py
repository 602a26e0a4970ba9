"""The record of what is in the bucket (state_dir/s3-record.msgpack):
key -> (size, etag, mtime_ns, xxh3, mode) for what we wrote or looked at,
since ListObjectsV2 returns no user metadata."""

from __future__ import annotations

import contextlib
import logging
import os

import msgpack

from reconcile.statefile import write_private
from reconcile.remotes.s3.objects import Record

log = logging.getLogger(__name__)

RECORD_NAME = "s3-record.msgpack"
RECORD_VERSION = 1
SAVE_EVERY = 5000  # record changes between saves, so a killed run loses little


class ObjectRecord:
    """S3Remote's record, guarded by self._lock; saved under self._save_lock."""

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
        objects = data.get("objects", {})
        if not isinstance(objects, dict) or not all(isinstance(k, str) and _well_formed(v) for k, v in objects.items()):
            log.warning("ignoring an S3 record of the wrong shape %s: listing the bucket instead", path)
            return
        # records written before modes were kept have four fields
        self._record = {k: (v[0], v[1], v[2], v[3], v[4] if len(v) > 4 else None) for k, v in objects.items()}

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


def _well_formed(v) -> bool:
    """(size, etag, mtime, xxh3, mode) as saved, the mode missing in older records"""
    return isinstance(v, (list, tuple)) and len(v) in (4, 5) and isinstance(v[0], int) and isinstance(v[1], str) \
        and all(x is None or isinstance(x, t) for x, t in zip(v[2:], (int, bytes, int)))
