"""Block records (delta transfer, issue 26) follow the files they describe:
dropped after a complete run once a file leaves the snapshot (deleted,
shrunk below 64 MiB, excluded), carried to a moved file's new name (so its
next edit is still a delta), and on S3 carried only by a copy of the very
object they describe. Real sshd, SeaweedFS and folders; every check reads
the storage itself."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from reconcile.blockmap import BlockStore
from reconcile.entry import Entry
from reconcile.remotes import open_remote
from tests.cli import reconcile
from tests.mirror import write
from tests.storage import read_dest

MiB = 1 << 20
BLOCK = 8 * MiB
SIZE = 72 * MiB  # above the 64 MiB threshold: nine blocks
T0 = 1_600_000_000 * 10**9
LOCAL_DELTA = {"RECONCILE_TEST_LOCAL_DELTA": "1"}  # the test folders are on ext4: no deltas there else


@pytest.fixture(params=["local", "sftp", "s3"])
def dest(request):
    d = request.getfixturevalue(f"{request.param}_dest")
    return replace(d, env={**d.env, **LOCAL_DELTA}) if d.kind == "local" else d


def apply(dest, src, state, *more) -> dict:
    p = reconcile("apply", src, dest.url, "--state-dir", state, "--json", *more, *dest.cli_args, env=dest.env)
    return json.loads(p.stdout)["totals"]


def recorded(state) -> list[str]:
    """the paths the pair's block records are kept for"""
    return sorted(BlockStore(str(state / "remote")).paths())


def test_records_of_files_gone_shrunk_or_excluded_are_pruned(dest, tmp_path):
    src, state = tmp_path / "src", tmp_path / "state"
    for name in ("gone.img", "shrunk.img", "kept.img", "skipped.img"):
        write(src / name, random.randbytes(SIZE), T0)
    apply(dest, src, state)
    assert recorded(state) == ["gone.img", "kept.img", "shrunk.img", "skipped.img"]

    (src / "gone.img").unlink()
    write(src / "shrunk.img", random.randbytes(MiB), T0 + 10**9)
    apply(dest, src, state, "--delete", "--exclude", "skipped.img")
    assert recorded(state) == ["kept.img"]
    assert sorted(read_dest(dest).files) == ["kept.img", "shrunk.img", "skipped.img"]


def test_a_moved_large_file_keeps_its_record_so_its_next_edit_is_a_delta(dest, tmp_path):
    """a folder renamed (one move of the folder where the remote can), then
    the file in it renamed: the record follows both, and the edit after sends
    one block"""
    src, state = tmp_path / "src", tmp_path / "state"
    data = bytearray(random.randbytes(SIZE))
    write(src / "vm" / "disk.img", bytes(data), T0)
    apply(dest, src, state)
    (src / "vm").rename(src / "vms")
    totals = apply(dest, src, state, "--delete")
    assert totals["bytes_sent"] == 0 and recorded(state) == ["vms/disk.img"]
    (src / "vms" / "disk.img").rename(src / "vms" / "disk-2.img")
    totals = apply(dest, src, state, "--delete")
    assert totals["bytes_sent"] == 0 and recorded(state) == ["vms/disk-2.img"]

    data[5 * BLOCK:5 * BLOCK + 10] = b"m" * 10
    write(src / "vms" / "disk-2.img", bytes(data), T0 + 10**9)
    totals = apply(dest, src, state)
    assert totals["bytes_sent"] == BLOCK and totals["bytes_saved"]["delta"] == SIZE - BLOCK
    stored = read_dest(dest)
    assert stored.files == {"vms/disk-2.img": data} and not stored.temps


def entry_of(path, rel: str) -> Entry:
    st = path.stat()
    return Entry(rel, size=st.st_size, mtime_ns=st.st_mtime_ns)


def s3_put_behind_our_back(dest, rel: str, body: bytes) -> None:
    """the object rewritten by someone else, its metadata kept: a new ETag"""
    from tests.servers_s3 import boto3_client

    bucket, _, prefix = dest.url[len("s3://"):].partition("/")
    client = boto3_client(dest.options.s3.endpoint)
    key = f"{prefix}/{rel}"
    meta = client.head_object(Bucket=bucket, Key=key)["Metadata"]
    client.put_object(Bucket=bucket, Key=key, Body=body, Metadata=meta)


def test_s3_a_move_carries_the_record_only_from_the_object_it_describes(s3_dest, tmp_path):
    """the object was rewritten after this remote last saw it: the copy made
    under CopySourceIfMatch fails, the move is made from what a HEAD says, and
    the record stays behind (its blocks are not the moved object's)"""
    local = tmp_path / "disk.img"
    write(local, random.randbytes(SIZE), T0)
    other = random.randbytes(SIZE)
    remote = open_remote(s3_dest.url, s3_dest.options)
    try:
        remote.upload(str(local), "disk.img", entry_of(local, "disk.img"))
        assert BlockStore(s3_dest.options.state_dir).paths() == ["disk.img"]
        s3_put_behind_our_back(s3_dest, "disk.img", other)
        remote.move("disk.img", "moved.img")
    finally:
        remote.close()
    assert BlockStore(s3_dest.options.state_dir).paths() == []
    assert read_dest(s3_dest).files == {"moved.img": other}


def test_s3_a_delta_from_an_object_rewritten_since_it_was_seen_sends_the_whole_file(s3_dest, tmp_path):
    """UploadPartCopy under CopySourceIfMatch fails (412): the whole file is
    sent, where before the upload failed as a permanent error"""
    local = tmp_path / "disk.img"
    data = bytearray(random.randbytes(SIZE))
    write(local, bytes(data), T0)
    remote = open_remote(s3_dest.url, s3_dest.options)
    try:
        remote.upload(str(local), "disk.img", entry_of(local, "disk.img"))
        s3_put_behind_our_back(s3_dest, "disk.img", random.randbytes(SIZE))
        data[:10] = b"r" * 10
        write(local, bytes(data), T0 + 10**9)
        got = remote.upload(str(local), "disk.img", entry_of(local, "disk.img"))
    finally:
        remote.close()
    assert got.reused == 0
    assert read_dest(s3_dest).files == {"disk.img": data}
