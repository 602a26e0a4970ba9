"""S3-specific behaviour against a real SeaweedFS: request counts, server-side
moves, multipart resume, rclone-compatible metadata, error mapping."""

from __future__ import annotations

import math
import os
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import msgpack
import pytest
import xxhash

from reconcile.entry import DIR, FILE, Entry, sort_key
from reconcile.errors import ConfigError, NotFound, NotSupported, Permanent, SourceChanged, Transient, Unreachable
from reconcile.remotes.base import RemoteOptions, S3Options
from tests.servers_s3 import free_ports, make_dest

MiB = 1 << 20
MTIME = 1_700_000_000_123_456_789


class Requests:
    """counts requests by operation name, retries included."""

    def __init__(self, client, quick=None) -> None:
        """quick: the remote's QuickCopy, whose CopyObject requests bypass the client"""
        self._client_counts: Counter[str] = Counter()
        self.quick = quick
        self._quick_base = quick.sent if quick else 0
        client.meta.events.register("before-send.s3", self._on)

    def _on(self, event_name: str, **_) -> None:
        self._client_counts[event_name.rsplit(".", 1)[-1]] += 1

    @property
    def counts(self) -> Counter[str]:
        counts = Counter(self._client_counts)
        if self.quick is not None and self.quick.sent > self._quick_base:
            counts["CopyObject"] += self.quick.sent - self._quick_base
        return counts

    def reset(self) -> None:
        self._client_counts.clear()
        self._quick_base = self.quick.sent if self.quick else 0


def open_remote(dest, **extra):
    from reconcile.remotes.s3 import S3Remote

    options = replace(dest.options, extra={**dest.options.extra, **extra})
    return S3Remote.from_url(dest.url, options)


def write(path, data: bytes) -> Entry:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(MTIME, MTIME))
    return Entry(path.name, FILE, len(data), MTIME, hash=xxhash.xxh3_128_digest(data))


def upload_many(remote, tmp_path, paths: list[str]) -> None:
    src = tmp_path / "blob"
    entry = write(src, b"same content")
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda p: remote.upload(str(src), p, replace(entry, path=p)), paths))


def raw_key(dest, path: str) -> tuple[str, str]:
    bucket, _, prefix = dest.url[5:].partition("/")
    return bucket, f"{prefix}/{path}" if prefix else path


# --- listing and the record -------------------------------------------------------------


def test_no_change_list_costs_only_list_requests(s3_dest, tmp_path):
    n = 2500
    paths = [f"d{i % 7}/f{i:05d}" for i in range(n)]
    remote = open_remote(s3_dest)
    upload_many(remote, tmp_path, paths)
    remote.close()

    again = open_remote(s3_dest)  # a new run: the record comes from disk
    reqs = Requests(again.client, again._quick)
    listed = list(again.list())
    again.close()
    assert reqs.counts == {"ListObjectsV2": math.ceil(n / 1000)}
    assert [e.path for e in listed] == sorted(paths, key=lambda p: sort_key(p, FILE))
    assert all(e.kind == FILE and e.mtime_ns == MTIME and e.hash is not None for e in listed)


def test_unknown_objects_are_headed_once(s3_dest, seaweed):
    bucket, _ = raw_key(s3_dest, "")
    for i in range(20):  # as rclone leaves them: mtime, no xxh3
        _, key = raw_key(s3_dest, f"r/{i:02d}")
        seaweed.client().put_object(Bucket=bucket, Key=key, Body=b"x" * i,
                                    Metadata={"mtime": "1700000000.5"})
    remote = open_remote(s3_dest)
    reqs = Requests(remote.client, remote._quick)
    first = list(remote.list())
    assert reqs.counts == {"ListObjectsV2": 1, "HeadObject": 20}
    assert all(e.mtime_ns == 1_700_000_000_500_000_000 and e.hash is None for e in first)
    remote.close()

    again = open_remote(s3_dest)
    reqs = Requests(again.client, again._quick)
    assert [(e.path, e.size, e.mtime_ns) for e in again.list()] == [(e.path, e.size, e.mtime_ns) for e in first]
    assert reqs.counts == {"ListObjectsV2": 1}


def test_changed_object_is_headed_again_and_gone_ones_forgotten(s3_dest, seaweed, tmp_path):
    remote = open_remote(s3_dest)
    upload_many(remote, tmp_path, ["a", "b", "c"])
    bucket, key = raw_key(s3_dest, "b")
    seaweed.client().put_object(Bucket=bucket, Key=key, Body=b"other tool", Metadata={"mtime": "5"})
    seaweed.client().delete_object(Bucket=bucket, Key=raw_key(s3_dest, "c")[1])
    reqs = Requests(remote.client, remote._quick)
    listed = {e.path: e for e in remote.list()}
    assert reqs.counts == {"ListObjectsV2": 1, "HeadObject": 1}
    assert listed["b"].mtime_ns == 5 * 10**9 and listed["b"].size == 10 and listed["b"].hash is None
    assert set(listed) == {"a", "b"}
    remote.close()
    record = msgpack.unpackb((tmp_path / "s3state" / "s3-record.msgpack").read_bytes(), strict_map_key=False)
    assert set(record["objects"]) == {"a", "b"}


def test_record_file_is_private(s3_dest, tmp_path):
    remote = open_remote(s3_dest)
    upload_many(remote, tmp_path, ["x"])
    remote.close()
    mode = os.stat(tmp_path / "s3state" / "s3-record.msgpack").st_mode & 0o777
    assert mode == 0o600


def test_no_directory_entries_and_foreign_keys_skipped(s3_dest, seaweed, tmp_path):
    remote = open_remote(s3_dest)
    remote.mkdir("empty/dir")  # no marker object
    upload_many(remote, tmp_path, ["a-b", "a/x", "a0"])
    bucket, _ = raw_key(s3_dest, "")
    for bad in ["dirmarker/", "a.reconcile-tmp-1234-x"]:
        seaweed.client().put_object(Bucket=bucket, Key=raw_key(s3_dest, bad)[1], Body=b"")
    assert remote.capabilities.empty_dirs is False
    assert [e.path for e in remote.list()] == ["a-b", "a/x", "a0"]
    assert remote.stat("a").kind == DIR
    assert remote.stat("empty/dir") is None
    remote.close()


def test_prefix_does_not_leak_neighbours(seaweed, s3_bucket, tmp_path):
    mine = make_dest(seaweed, s3_bucket, tmp_path / "s1", prefix="photos")
    other = make_dest(seaweed, s3_bucket, tmp_path / "s2", prefix="photos-old")
    upload_many(open_remote(other), tmp_path, ["x"])
    remote = open_remote(mine)
    upload_many(remote, tmp_path, ["y"])
    assert [e.path for e in remote.list()] == ["y"]


# --- metadata --------------------------------------------------------------------------


def test_mtime_is_stored_in_rclone_format(s3_dest, seaweed, tmp_path):
    remote = open_remote(s3_dest)
    entry = write(tmp_path / "f", b"hello")
    got = remote.upload(str(tmp_path / "f"), "dir/f", replace(entry, path="dir/f"))
    assert (got.size, got.mtime_ns, got.hash) == (5, MTIME, entry.hash)
    bucket, key = raw_key(s3_dest, "dir/f")
    meta = seaweed.client().head_object(Bucket=bucket, Key=key)["Metadata"]
    assert meta == {"mtime": "1700000000.123456789", "xxh3": entry.hash.hex()}
    st = remote.stat("dir/f")
    assert (st.kind, st.size, st.mtime_ns, st.hash) == (FILE, 5, MTIME, entry.hash)


def test_mtime_parsing():
    from reconcile.remotes.s3 import format_mtime, parse_mtime

    assert parse_mtime("1700000000.123456789") == MTIME
    assert parse_mtime("1700000000") == 1_700_000_000 * 10**9
    assert parse_mtime("1700000000.5") == 1_700_000_000_500_000_000
    assert parse_mtime("1.7e9") == 1_700_000_000 * 10**9
    assert parse_mtime("garbage") is None and parse_mtime(None) is None
    for ns in (MTIME, 0, 1, -1, -1_500_000_000):
        assert parse_mtime(format_mtime(ns)) == ns


def test_download_from_offset(s3_dest, tmp_path):
    remote = open_remote(s3_dest)
    data = os.urandom(300_000)
    entry = write(tmp_path / "f", data)
    remote.upload(str(tmp_path / "f"), "f", entry)
    out = tmp_path / "out"
    out.write_bytes(data[:100_000])
    got = remote.download("f", str(out), offset=100_000)
    assert out.read_bytes() == data and got.size == len(data) and got.mtime_ns == MTIME
    assert remote.download("f", str(out), offset=len(data)).size == len(data)  # nothing left
    with pytest.raises(NotFound):
        remote.download("missing", str(tmp_path / "m"))


# --- moves and deletes -----------------------------------------------------------------


def test_directory_move_sends_no_file_data(s3_dest, tmp_path):
    remote = open_remote(s3_dest)
    paths = [f"old/sub{i % 5}/f{i:03d}" for i in range(500)]
    upload_many(remote, tmp_path, paths + ["older"])
    reqs = Requests(remote.client, remote._quick)
    remote.move("old", "new")
    assert reqs.counts["PutObject"] == reqs.counts["UploadPart"] == 0
    assert reqs.counts["CopyObject"] == 500
    assert reqs.counts["DeleteObjects"] == 5  # DELETE_EARLY sources at a time, while the copies go on
    listed = list(remote.list())
    assert sorted(e.path for e in listed) == sorted(["older"] + [p.replace("old/", "new/", 1) for p in paths])
    assert all(e.mtime_ns == MTIME and e.hash is not None for e in listed)
    remote.close()
    fresh = open_remote(s3_dest)  # the metadata travelled with the copies, not only in our record
    assert fresh.stat("new/sub0/f000").mtime_ns == MTIME


def test_folder_move_deletes_confirmed_sources_while_copies_go_on(s3_dest, tmp_path):
    remote = open_remote(s3_dest)
    paths = [f"src/f{i:03d}" for i in range(400)]
    upload_many(remote, tmp_path, paths)
    copies_sent_at_each_delete = []
    remote.client.meta.events.register(
        "before-send.s3.DeleteObjects", lambda **_: copies_sent_at_each_delete.append(remote._quick.sent))
    before = remote._quick.sent
    remote.move("src", "dst")
    assert len(copies_sent_at_each_delete) == 4
    assert copies_sent_at_each_delete[0] - before < 400  # the first batch went before the last copy
    assert sorted(e.path for e in remote.list()) == sorted(p.replace("src/", "dst/", 1) for p in paths)
    remote.close()


def test_move_file_and_missing_source(s3_dest, tmp_path):
    remote = open_remote(s3_dest)
    upload_many(remote, tmp_path, ["a", "b"])
    remote.move("a", "deep/c")  # replaces nothing, makes no parents
    remote.move("b", "deep/c")  # replaces an existing object
    assert [e.path for e in remote.list()] == ["deep/c"]
    with pytest.raises(NotFound):
        remote.move("a", "z")


def test_move_many_and_its_guard(s3_dest, tmp_path):
    remote = open_remote(s3_dest)
    upload_many(remote, tmp_path, [f"m{i}" for i in range(30)])
    reqs = Requests(remote.client, remote._quick)
    remote.move_many([(f"m{i}", f"n/m{i}") for i in range(30)])
    assert reqs.counts["CopyObject"] == 30 and reqs.counts["DeleteObjects"] == 1
    assert reqs.counts["PutObject"] == 0
    with pytest.raises(NotSupported):
        remote.move_many([("n/m1", "n/m2"), ("n/m2", "n/m3")])
    with pytest.raises(NotFound) as info:
        remote.move_many([("n/m1", "o/m1"), ("gone", "o/gone")])
    assert info.value.moved == [("n/m1", "o/m1")]
    assert remote.stat("o/m1") is not None and remote.stat("n/m1") is None


def test_big_copy_uses_upload_part_copy(s3_dest, seaweed, tmp_path):
    remote = open_remote(s3_dest, copy_threshold=6 * MiB, copy_part_size=5 * MiB)
    data = os.urandom(12 * MiB)
    entry = write(tmp_path / "big", data)
    remote.upload(str(tmp_path / "big"), "big", entry)
    reqs = Requests(remote.client, remote._quick)
    remote.move("big", "moved")
    assert reqs.counts["UploadPartCopy"] == 3 and reqs.counts["UploadPart"] == 0
    bucket, key = raw_key(s3_dest, "moved")
    obj = seaweed.client().get_object(Bucket=bucket, Key=key)
    assert obj["Metadata"]["mtime"] == "1700000000.123456789"
    assert obj["Body"].read() == data


def test_delete_many_batches_by_1000(s3_dest, tmp_path):
    remote = open_remote(s3_dest)
    paths = [f"x{i:04d}" for i in range(1200)]
    upload_many(remote, tmp_path, paths)
    reqs = Requests(remote.client, remote._quick)
    remote.delete_many(paths + ["never-existed"])
    assert reqs.counts == {"DeleteObjects": 2}
    remote.delete("never-existed")  # missing is fine
    remote.rmdir("anything")
    assert list(remote.list()) == []


# --- uploads ---------------------------------------------------------------------------


def test_non_utf8_name_is_refused(s3_dest, tmp_path):
    remote = open_remote(s3_dest)
    entry = write(tmp_path / "f", b"x")
    bad = b"caf\xe9".decode("utf-8", "surrogateescape")
    with pytest.raises(Permanent, match="UTF-8"):
        remote.upload(str(tmp_path / "f"), bad, replace(entry, path=bad))
    assert remote.stat(bad) is None


def test_changed_source_is_not_uploaded(s3_dest, tmp_path):
    remote = open_remote(s3_dest)
    entry = write(tmp_path / "f", b"before")
    (tmp_path / "f").write_bytes(b"after!")  # same size, new content
    with pytest.raises(SourceChanged):
        remote.upload(str(tmp_path / "f"), "f", entry)
    assert remote.stat("f") is None


def test_storage_class_is_sent(s3_dest, seaweed, tmp_path):
    remote = open_remote(replace(s3_dest, options=replace(s3_dest.options, s3=replace(s3_dest.options.s3, storage_class="STANDARD_IA"))))
    entry = write(tmp_path / "f", b"x")
    remote.upload(str(tmp_path / "f"), "f", entry)
    bucket, key = raw_key(s3_dest, "f")
    assert seaweed.client().head_object(Bucket=bucket, Key=key).get("StorageClass") == "STANDARD_IA"


def big_file(tmp_path, size: int = 40 * MiB) -> tuple[str, Entry, bytes]:
    data = os.urandom(size)
    entry = write(tmp_path / "big", data)
    return str(tmp_path / "big"), replace(entry, path="big"), data


def stored_parts(client, dest, upload_id: str) -> int:
    bucket, key = raw_key(dest, "big")
    return len(client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id).get("Parts", []))


class Stop(BaseException):
    """a kill, as far as the upload can tell: nothing botocore would retry."""


def stop_after(parts: int, action=None):
    """progress that stops the run once `parts` parts' worth of bytes went out."""
    seen = []

    def progress(n: int) -> None:
        seen.append(n)
        if sum(seen) >= parts * 5 * MiB:
            if action and sum(seen) - n < parts * 5 * MiB:
                action()
            raise Stop

    return progress


def check_resumed(dest, seaweed_client, path, entry, data, state, opts) -> None:
    total = math.ceil(len(data) / (5 * MiB))
    stored = stored_parts(seaweed_client, dest, state["upload_id"])
    assert 0 < stored < total
    remote = open_remote(dest, **opts)  # a new run
    reqs = Requests(remote.client, remote._quick)
    sent = []
    got = remote.upload(path, "big", entry, progress=sent.append, resume=state)
    assert reqs.counts["UploadPart"] == total - stored
    assert reqs.counts["CreateMultipartUpload"] == 0 and reqs.counts["ListParts"] == 1
    assert sum(sent) == len(data) - stored * 5 * MiB
    assert got.mtime_ns == MTIME and got.size == len(data)
    bucket, key = raw_key(dest, "big")
    obj = seaweed_client.get_object(Bucket=bucket, Key=key)
    assert obj["Body"].read() == data and obj["Metadata"]["mtime"] == "1700000000.123456789"
    assert remote.remove_temp_files() == 0  # completed: nothing left behind


MULTIPART = {"multipart_threshold": 8 * MiB, "part_size": 5 * MiB, "part_concurrency": 2}


def test_multipart_resume_sends_only_missing_parts(s3_dest, seaweed, tmp_path):
    path, entry, data = big_file(tmp_path)
    states: list[dict] = []
    remote = open_remote(s3_dest, **MULTIPART)
    with pytest.raises(Stop):
        remote.upload(path, "big", entry, progress=stop_after(3), checkpoint=states.append)
    assert len(states) == 1 and set(states[0]) == {"upload_id", "key", "part_size"}
    check_resumed(s3_dest, seaweed.client(), path, entry, data, states[0], MULTIPART)


def test_multipart_resume_after_server_stop(seaweed_factory, tmp_path):
    server = seaweed_factory()  # a private server: this test stops it
    bucket = server.new_bucket()
    dest = make_dest(server, bucket, tmp_path / "s3state")
    path, entry, data = big_file(tmp_path)
    states: list[dict] = []
    opts = {**MULTIPART, "s3_attempts": 1}
    remote = open_remote(dest, **opts)
    with pytest.raises((Transient, Stop)):
        remote.upload(path, "big", entry, progress=stop_after(3, server.stop), checkpoint=states.append)
    server.start()
    check_resumed(dest, server.client(), path, entry, data, states[0], MULTIPART)


def test_gone_upload_id_starts_over(s3_dest, tmp_path):
    path, entry, data = big_file(tmp_path, 12 * MiB)
    remote = open_remote(s3_dest, **MULTIPART)
    reqs = Requests(remote.client, remote._quick)
    stale = {"upload_id": "no-such-upload", "key": raw_key(s3_dest, "big")[1], "part_size": 5 * MiB}
    states: list[dict] = []
    remote.upload(path, "big", entry, resume=stale, checkpoint=states.append)
    assert reqs.counts["CreateMultipartUpload"] == 1 and reqs.counts["UploadPart"] == 3
    assert len(states) == 1 and states[0]["upload_id"] != "no-such-upload"


def test_remove_temp_files_keeps_resume_handles(s3_dest, seaweed):
    bucket, _ = raw_key(s3_dest, "")
    client = seaweed.client()
    ids = [client.create_multipart_upload(Bucket=bucket, Key=raw_key(s3_dest, f"u{i}")[1])["UploadId"]
           for i in range(3)]
    outside = client.create_multipart_upload(Bucket=bucket, Key="elsewhere/x")["UploadId"]
    remote = open_remote(s3_dest)
    assert remote.remove_temp_files(keep=frozenset({ids[0]})) == 2
    left = {u["UploadId"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}
    assert left == {ids[0], outside}


# --- errors ----------------------------------------------------------------------------


def test_no_such_bucket_is_a_config_error(seaweed, tmp_path):
    dest = make_dest(seaweed, "no-such-bucket-here", tmp_path / "st")
    remote = open_remote(dest)
    with pytest.raises(ConfigError, match="no-such-bucket-here"):
        list(remote.list())


def test_endpoint_down_is_unreachable(s3_credentials, tmp_path):
    (port,) = free_ports(1)
    options = RemoteOptions(s3=S3Options(endpoint=f"http://127.0.0.1:{port}"), state_dir=str(tmp_path), extra={"s3_attempts": 1})
    from reconcile.remotes.s3 import S3Remote

    remote = S3Remote.from_url("s3://some-bucket/p", options)
    with pytest.raises(Unreachable):
        list(remote.list())


@pytest.mark.parametrize("url", ["s3://", "s3:///x", "s3://a/b", "s3://bad_bucket!/x", "s3://b//x"])
def test_bad_urls(url, s3_credentials):
    from reconcile.remotes.s3 import parse_url

    with pytest.raises(ConfigError):
        parse_url(url)


def test_no_credentials_is_an_auth_error(monkeypatch, tmp_path):
    from reconcile.errors import AuthError
    from reconcile.remotes.s3 import S3Remote

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    remote = S3Remote.from_url("s3://some-bucket", RemoteOptions(s3=S3Options(endpoint="http://127.0.0.1:9")))
    with pytest.raises(AuthError, match="credentials"):
        list(remote.list())


def test_unknown_profile_is_a_config_error(monkeypatch, tmp_path):
    from reconcile.remotes.s3 import S3Remote

    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="nope"):
        S3Remote.from_url("s3://some-bucket", RemoteOptions(s3=S3Options(profile="nope")))


@pytest.mark.parametrize("code,status,error", [
    ("NoSuchBucket", 404, ConfigError), ("AccessDenied", 403, ConfigError),
    ("InvalidAccessKeyId", 403, ConfigError), ("SignatureDoesNotMatch", 403, ConfigError),
    ("PermanentRedirect", 301, ConfigError), ("AuthorizationHeaderMalformed", 400, ConfigError),
    ("SlowDown", 503, Transient), ("InternalError", 500, Transient), ("NoSuchKey", 404, NotFound),
    ("InvalidArgument", 400, Permanent),
])
def test_error_mapping(code, status, error, s3_dest):
    """server replies SeaweedFS cannot be made to send, mapped without a server call."""
    from botocore.exceptions import ClientError

    remote = open_remote(s3_dest)
    reply = {"Error": {"Code": code, "Message": "m", "Region": "eu-west-1"},
             "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}}}
    mapped = remote._map_client_error(ClientError(reply, "GetObject"), "read x")
    assert type(mapped) is error or (error is ConfigError and isinstance(mapped, ConfigError))
    if error is ConfigError:
        assert remote.bucket in str(mapped) and "\n" not in str(mapped)
    if code == "PermanentRedirect":
        assert "AWS_DEFAULT_REGION=eu-west-1" in str(mapped)


def test_list_order_fixes_folder_by_folder_listings():
    from reconcile.remotes.s3 import ListOrder

    paths = ["a/x", "a/y/z", "a-b", "a-b/c", "a.txt", "a0", "b", "b/c/d", "b/c-d", "c"]
    folder_order = sorted(paths, key=lambda p: [c.encode() for c in p.split("/")])  # SeaweedFS
    for listed, byte_ordered in ((folder_order, False), (sorted(paths), False), (sorted(paths), True)):
        order = ListOrder(byte_ordered)
        out = [e.path for p in listed for e in order.push(Entry(p))] + [e.path for e in order.flush()]
        assert out == sorted(paths, key=lambda p: p.encode())
    order = ListOrder(True)
    list(order.push(Entry("b")))
    with pytest.raises(Permanent, match="out of order"):
        list(order.push(Entry("a")))


# --- server-side encryption ----------------------------------------------------------------


def test_sse_aes256_on_every_kind_of_write(s3_dest, seaweed, tmp_path):
    """single PUT, multipart, CopyObject and UploadPartCopy all ask for SSE-S3."""
    from reconcile.remotes.s3 import S3Remote

    opts = replace(s3_dest.options, s3=replace(s3_dest.options.s3, sse="AES256"),
                   extra={**s3_dest.options.extra, **MULTIPART, "copy_threshold": 6 * MiB, "copy_part_size": 5 * MiB})
    remote = S3Remote.from_url(s3_dest.url, opts)
    small, big = os.urandom(1000), os.urandom(12 * MiB)
    remote.upload(str(tmp_path / "s"), "small", write(tmp_path / "s", small))
    remote.upload(str(tmp_path / "b"), "big", write(tmp_path / "b", big))
    remote.move("small", "moved/small")
    remote.move("big", "moved/big")
    remote.close()
    client = seaweed.client()
    for path, data in (("moved/small", small), ("moved/big", big)):
        bucket, key = raw_key(s3_dest, path)
        obj = client.get_object(Bucket=bucket, Key=key)
        assert obj.get("ServerSideEncryption") == "AES256", path
        assert obj["Body"].read() == data


def test_sse_kms_requests_carry_the_key_id(s3_dest, tmp_path):
    """SeaweedFS has no KMS here, so this checks what we send, and that its
    refusal is our error, not a traceback."""
    from reconcile.remotes.s3 import S3Remote
    opts = replace(s3_dest.options, s3=replace(s3_dest.options.s3, sse="aws:kms", sse_kms_key_id="alias/backups"),
                   extra={**s3_dest.options.extra, "s3_attempts": 1})
    remote = S3Remote.from_url(s3_dest.url, opts)
    sent: list[dict] = []
    remote.client.meta.events.register("before-send.s3.PutObject", lambda request, **_: sent.append(dict(request.headers)))
    with pytest.raises((Transient, Permanent)):
        remote.upload(str(tmp_path / "s"), "small", write(tmp_path / "s", b"x" * 100))
    remote.close()
    headers = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in sent[0].items()}
    assert headers["x-amz-server-side-encryption"] == "aws:kms"
    assert headers["x-amz-server-side-encryption-aws-kms-key-id"] == "alias/backups"


def test_file_rewritten_during_a_streamed_put_never_replaces_the_object(s3_dest, seaweed, tmp_path):
    """8-64 MiB files are one streamed PUT: a save while it is on the wire must
    leave the old object whole, not the new bytes under the old hash."""
    from reconcile.remotes.s3 import IN_MEMORY_MAX

    old, new = b"A" * (IN_MEMORY_MAX + MiB), b"B" * (IN_MEMORY_MAX + MiB)
    path = tmp_path / "t.bin"
    entry = write(path, old)
    remote = open_remote(s3_dest)
    remote.upload(str(path), "t.bin", entry)

    def save_new_version(**_) -> None:
        with open(path, "r+b") as fh:
            fh.write(new)

    remote.client.meta.events.register("before-send.s3.PutObject", save_new_version)
    with pytest.raises(SourceChanged):
        remote.upload(str(path), "t.bin", entry)
    remote.close()
    bucket, key = raw_key(s3_dest, "t.bin")
    obj = seaweed.client().get_object(Bucket=bucket, Key=key)
    assert obj["Body"].read() == old
    assert obj["Metadata"]["xxh3"] == xxhash.xxh3_128_hexdigest(old)


def test_bad_sse_is_a_config_error_before_any_request(s3_dest, tmp_path):
    from tests.cli import reconcile

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a").write_bytes(b"a")
    for flags, said in ((["--s3-sse", "AES-256"], "--s3-sse 'AES-256'"),
                        (["--s3-sse-kms-key-id", "k"], "--s3-sse-kms-key-id needs --s3-sse aws:kms")):
        p = reconcile("plan", tmp_path / "src", s3_dest.url, "--state-dir", tmp_path / "st", *flags,
                      *s3_dest.cli_args, env=s3_dest.env, check=2)
        assert said in p.stderr


@pytest.mark.parametrize("size, opts", [(2 * MiB, {}), (10 * MiB, {}), (12 * MiB, MULTIPART)],
                         ids=["in-memory", "streamed", "multipart"])
def test_progress_and_bwlimit_pace_the_wire_not_whole_requests(s3_dest, tmp_path, size, opts):
    """bytes are reported (and --bwlimit sleeps) while a body is being sent,
    in steps, not once the request is over; the signing read is not counted."""
    path = tmp_path / "f"
    entry = write(path, os.urandom(size))
    remote = open_remote(s3_dest, **opts)
    events: list[tuple[str, int]] = []
    lock = threading.Lock()

    def mark(what: str):
        def hook(**_) -> None:
            with lock:
                events.append((what, 0))
        return hook

    for op in ("PutObject", "UploadPart"):
        remote.client.meta.events.register(f"before-send.s3.{op}", mark("send"))
        remote.client.meta.events.register(f"after-call.s3.{op}", mark("done"))

    def progress(n: int) -> None:
        with lock:
            events.append(("bytes", n))

    remote.upload(str(path), "f", entry, progress=progress)
    remote.close()
    assert sum(n for what, n in events if what == "bytes") == size  # counted once
    steps = [i for i, (what, _) in enumerate(events) if what == "bytes"]
    assert len(steps) >= size // (256 << 10)  # steps of at most one socket write
    first_send = next(i for i, (what, _) in enumerate(events) if what == "send")
    last_done = max(i for i, (what, _) in enumerate(events) if what == "done")
    assert first_send < steps[0] and steps[-1] < last_done
