"""Read a destination straight from its storage, never through reconcile's
own remote code: the folder on disk (a local destination, or the folder the
test sshd serves on this machine), or the bucket through a plain boto3 client.

Temps are our temp names, and on S3 also every unfinished multipart upload."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from reconcile.entry import TEMP_MARK

SEC = 1_000_000_000


@dataclass
class Stored:
    files: dict[str, bytes] = field(default_factory=dict)  # under real names
    mtime_s: dict[str, int | None] = field(default_factory=dict)  # whole seconds; S3: our metadata
    mode: dict[str, int | None] = field(default_factory=dict)  # st_mode; S3: the "mode" metadata, if any
    dirs: set[str] = field(default_factory=set)
    links: dict[str, str] = field(default_factory=dict)  # symlink -> its target (folders only)
    temps: list[str] = field(default_factory=list)  # temp names, unfinished multipart uploads
    temp_data: list[bytes] = field(default_factory=list)  # what temp names hold (a swap parks a file there)


def read_folder(root: str) -> Stored:
    out = Stored()
    broot = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(broot):
        in_temp = TEMP_MARK.encode() in os.path.relpath(dirpath, broot)
        for n in dirnames + filenames:
            full = os.path.join(dirpath, n)
            rel = os.fsdecode(os.path.relpath(full, broot))
            temp = in_temp or TEMP_MARK in os.fsdecode(n)
            if temp and not in_temp:
                out.temps.append(rel)
            if os.path.islink(full):
                if not temp:
                    out.links[rel] = os.fsdecode(os.readlink(full))
            elif n in dirnames:
                if not temp:
                    out.dirs.add(rel)
            elif os.path.isfile(full):
                with open(full, "rb") as f:
                    data = f.read()
                if temp:
                    out.temp_data.append(data)
                else:
                    out.files[rel] = data
                    st = os.stat(full)
                    out.mtime_s[rel], out.mode[rel] = st.st_mtime_ns // SEC, st.st_mode
    return out


def read_bucket(client, bucket: str, prefix: str) -> Stored:
    """every key under prefix/ and every unfinished multipart upload there."""
    out = Stored()
    pre = prefix + "/" if prefix else ""
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=pre):
        keys += [o["Key"] for o in page.get("Contents", []) or []]
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=pre):
        out.temps += [f"multipart upload {u['Key']}" for u in page.get("Uploads", []) or []]

    def get(key: str) -> tuple[str, bytes, dict]:
        got = client.get_object(Bucket=bucket, Key=key)
        return key[len(pre):], got["Body"].read(), got.get("Metadata") or {}

    with ThreadPoolExecutor(8) as pool:
        for rel, data, meta in pool.map(get, keys):
            if TEMP_MARK in rel:
                out.temps.append(rel)
                out.temp_data.append(data)
            else:
                out.files[rel] = data
                out.mtime_s[rel] = int(meta["mtime"].split(".")[0]) if meta.get("mtime") else None
                out.mode[rel] = int(meta["mode"], 8) if meta.get("mode") else None
    return out


def read_dest(dest) -> Stored:
    """a tests.conftest.Dest, read from its storage."""
    if dest.kind == "sftp":  # the test sshd serves a folder on this machine
        return read_folder(unquote(urlsplit(dest.url).path))
    if dest.kind != "s3":  # a local folder, on any file system
        return read_folder(dest.url)
    from tests.servers_s3 import boto3_client

    bucket, _, prefix = dest.url[len("s3://"):].partition("/")
    return read_bucket(boto3_client(dest.options.s3.endpoint), bucket, prefix.strip("/"))


def torn(stored: Stored, old: dict[str, bytes], new: dict[str, bytes]) -> list[str]:
    """real names holding neither the file's previous content nor its new one."""
    return sorted(p for p, data in stored.files.items() if data != old.get(p) and data != new.get(p))


def plant_resume_temps(dest) -> str:
    """two unfinished uploads a journal may name, written straight to storage:
    temp files in a folder (S3: multipart uploads). Returns the handle of
    the first, as upload's checkpoints name it (the temp path; the UploadId)."""
    from reconcile.entry import TEMP_MARK as T

    if dest.kind == "s3":
        from tests.servers_s3 import boto3_client

        bucket, _, prefix = dest.url[len("s3://"):].partition("/")
        client = boto3_client(dest.options.s3.endpoint)
        key = f"{prefix.strip('/')}/d/big".lstrip("/")
        ids = [client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"] for _ in range(2)]
        return ids[0]
    root = unquote(urlsplit(dest.url).path) if dest.kind == "sftp" else dest.url
    os.makedirs(os.path.join(root, "d"))
    for name in ("keep-me", "drop-me"):
        with open(os.path.join(root, "d", f"{T}{name}"), "wb") as f:
            f.write(name.encode())
    return f"d/{T}keep-me"


def resume_handles(dest) -> set[str]:
    """the unfinished uploads in storage, named as plant_resume_temps names them."""
    if dest.kind == "s3":
        from tests.servers_s3 import boto3_client

        bucket, _, prefix = dest.url[len("s3://"):].partition("/")
        client = boto3_client(dest.options.s3.endpoint)
        pre = prefix.strip("/") + "/" if prefix.strip("/") else ""
        uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=pre).get("Uploads", []) or []
        return {u["UploadId"] for u in uploads}
    # not an SFTP remote's first-use probe files, whose removes it does not wait for (probe.py)
    return {t for t in read_dest(dest).temps if not _probe_name(t)}


def _probe_name(path: str) -> bool:
    from reconcile.entry import TEMP_MARK

    name = path.rpartition("/")[2]
    return name.startswith((f"{TEMP_MARK}probe-", f"{TEMP_MARK}link-"))


def plant_temps(dest) -> int:
    """what a killed run leaves, written straight to storage: a temp file and a
    temp folder with a file in it (S3: an unfinished multipart upload with a
    part). Returns how many temp entries a cleanup should remove."""
    from reconcile.entry import TEMP_MARK as T

    if dest.kind == "s3":
        from tests.servers_s3 import boto3_client

        bucket, _, prefix = dest.url[len("s3://"):].partition("/")
        client = boto3_client(dest.options.s3.endpoint)
        key = f"{prefix.strip('/')}/keep/half-sent.bin".lstrip("/")
        up = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        client.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=1, Body=b"half")
        return 1
    root = unquote(urlsplit(dest.url).path) if dest.kind == "sftp" else dest.url
    with open(os.path.join(root, f"{T}0123456789ab-me"), "wb") as f:
        f.write(b"half")
    os.makedirs(os.path.join(root, f"{T}ba9876543210-dir", "inner"))
    with open(os.path.join(root, f"{T}ba9876543210-dir", "inner", "f"), "wb") as f:
        f.write(b"moved aside")
    return 2
