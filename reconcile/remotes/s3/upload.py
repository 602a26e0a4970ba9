"""One file up: a single PUT (read whole when small, else a body that checks
itself), or multipart (multipart.py) above the threshold."""

from __future__ import annotations

import base64
import hashlib
import os

import xxhash

from reconcile.entry import FILE, Entry
from reconcile.errors import ConfigError, NotFound, Permanent, SourceChanged
from reconcile.hashing import hash_fd
from reconcile.remotes.base import Checkpoint, Progress, Sent
from reconcile.remotes.s3.body import MiB, BytesBody, VerifiedBody, _changed, _file_md5, pread_exact
from reconcile.remotes.s3.multipart import _NotTheBlocks
from reconcile.remotes.s3.objects import _etag, format_mtime

IN_MEMORY_MAX = 8 * MiB  # small bodies are read whole, so we can hash what we send


class Upload:
    """S3Remote's upload (base.Remote.upload) and what every write sends along."""

    def _extra_args(self) -> dict:
        args = {}
        if self.options.s3.storage_class:
            args["StorageClass"] = self.options.s3.storage_class
        if self.options.s3.sse:
            if self.options.s3.sse not in ("AES256", "aws:kms"):
                raise ConfigError(f"--s3-sse {self.options.s3.sse!r}: use AES256 or aws:kms")
            args["ServerSideEncryption"] = self.options.s3.sse
        if self.options.s3.sse_kms_key_id:
            if self.options.s3.sse != "aws:kms":
                raise ConfigError("--s3-sse-kms-key-id needs --s3-sse aws:kms")
            args["SSEKMSKeyId"] = self.options.s3.sse_kms_key_id
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
                bmap = self._blocks.map_new(f.fileno(), entry.size, entry.hash, path, taken=entry.block_map)
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
