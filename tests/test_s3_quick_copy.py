"""A folder move's CopyObject requests go through quickcopy.py (signed by
botocore, sent by the client's HTTP session, about half the client's CPU a
copy) and fall back to the boto3 client for anything but a plain success.
Against SeaweedFS; the client's own requests are counted by its events."""

from __future__ import annotations

from collections import Counter

import pytest

from reconcile.errors import NotFound
from reconcile.remotes.s3.quickcopy import copy_result_etag
from tests.test_s3 import MTIME, open_remote, upload_many


class ClientCalls:
    def __init__(self, client) -> None:
        self.counts: Counter[str] = Counter()
        client.meta.events.register("before-send.s3", self._on)

    def _on(self, event_name: str, **_) -> None:
        self.counts[event_name.rsplit(".", 1)[-1]] += 1


def test_folder_move_copies_without_the_client_and_keeps_metadata(s3_dest, tmp_path):
    remote = open_remote(s3_dest)
    names = [f"old/é ü+%x {i}" for i in range(20)] + ["old/sub/a~b", "keep"]
    upload_many(remote, tmp_path, names)
    calls, sent = ClientCalls(remote.client), remote._quick.sent
    remote.move("old", "new")
    assert remote._quick.sent - sent == 21
    assert calls.counts["CopyObject"] == 0 and calls.counts["DeleteObjects"] == 1
    remote.close()
    fresh = open_remote(s3_dest)  # the metadata is on the objects, not only in our record
    listed = {e.path: e for e in fresh.list()}
    assert sorted(listed) == sorted(["keep"] + [n.replace("old/", "new/", 1) for n in names[:-1]])
    assert all(e.mtime_ns == MTIME and e.hash is not None for e in listed.values())
    fresh.close()


def test_a_missing_source_falls_back_to_the_client_and_is_not_found(s3_dest, tmp_path):
    remote = open_remote(s3_dest)
    upload_many(remote, tmp_path, ["a"])
    calls = ClientCalls(remote.client)
    remote._remember("ghost", (3, "0" * 32, MTIME, b"\0" * 16, None))  # recorded, but not on the server
    with pytest.raises(NotFound):
        remote.move("ghost", "b")
    assert calls.counts["CopyObject"] == 1  # the quick copy's 404 went to the client, which decided
    remote.close()


def test_sse_copies_stay_with_the_client(s3_dest, tmp_path):
    from dataclasses import replace

    from reconcile.remotes.s3 import S3Remote

    options = replace(s3_dest.options, s3=replace(s3_dest.options.s3, storage_class="STANDARD"))
    remote = S3Remote.from_url(s3_dest.url, options)
    upload_many(remote, tmp_path, ["d/x", "d/y"])
    calls, sent = ClientCalls(remote.client), remote._quick.sent
    remote.move("d", "e")
    assert calls.counts["CopyObject"] == 2 and remote._quick.sent == sent
    assert sorted(e.path for e in remote.list()) == ["e/x", "e/y"]
    remote.close()


def test_only_a_copy_object_result_with_an_etag_is_a_success():
    ns = b' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
    ok = b'<?xml version="1.0"?><CopyObjectResult%s><LastModified>2026-01-01T00:00:00Z</LastModified>' \
         b'<ETag>&quot;abc&quot;</ETag></CopyObjectResult>'
    assert copy_result_etag(200, ok % ns) == "abc"
    assert copy_result_etag(200, ok % b"") == "abc"
    assert copy_result_etag(200, b"<Error><Code>InternalError</Code><Message>x</Message></Error>") is None
    assert copy_result_etag(412, ok % ns) is None
    assert copy_result_etag(200, b"<CopyObjectResult><ETag></ETag></CopyObjectResult>") is None
    assert copy_result_etag(200, b"not xml") is None
    assert copy_result_etag(200, b"") is None
