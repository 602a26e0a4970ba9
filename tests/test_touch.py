"""Same content, new mtime: a `touch` that sets the remote's mtime and sends
no content (issue 26, item 1). On every remote kind; SFTP and S3 go through a
byte-counting TCP proxy, and every check reads the storage itself."""

from __future__ import annotations

import json
import os
import shutil
from urllib.parse import unquote, urlsplit

import pytest

from tests.cli import reconcile
from tests.mirror import write
from tests.proxied import proxied  # noqa: F401 (a fixture)
from tests.storage import SEC, read_dest

T0 = 1_600_000_000 * SEC
LATER = T0 + 86_400 * SEC  # a day later: a new mtime on every file system
N = 20
SIZE = 50_000


def cli(dest, *args, check=0):
    return reconcile(*args, *dest.cli_args, env=dest.env, check=check)


def plan_json(dest, src, state) -> dict:
    return json.loads(cli(dest, "plan", src, dest.url, "--state-dir", state, "--json").stdout)


def identity(dest, path: str):
    """what says a remote file was not rewritten: its inode on a folder, its
    ETag on S3 (SFTP: its inode in the folder the test sshd serves)"""
    if dest.kind == "s3":
        return None  # S3 rewrites keep the same MD5 ETag: the proxy's byte count tells instead
    root = dest.url if dest.kind == "local" else unquote(urlsplit(dest.url).path)
    return os.stat(os.path.join(root, path)).st_ino


def s3_metadata(dest, path: str) -> dict:
    from tests.servers_s3 import boto3_client

    bucket, _, prefix = dest.url[len("s3://"):].partition("/")
    return boto3_client(dest.options.s3.endpoint).head_object(Bucket=bucket, Key=f"{prefix}/{path}")["Metadata"]


def test_touched_files_send_no_content_and_get_the_new_mtime(proxied, tmp_path):
    dest, proxy = proxied
    src, state = tmp_path / "src", tmp_path / "state"
    data = {f"photos/p{i:02}.jpg": os.urandom(SIZE) for i in range(N)}
    for path, body in data.items():
        write(src / path, body, T0)
    write(src / "notes.txt", b"A" * SIZE, T0)
    cli(dest, "apply", src, dest.url, "--state-dir", state)
    before = {p: identity(dest, p) for p in data}
    meta_before = {p: s3_metadata(dest, p) for p in data} if dest.kind == "s3" else {}

    for i, path in enumerate(data):  # touch: same bytes, new mtime
        os.utime(src / path, ns=(LATER + i * SEC, LATER + i * SEC))
    write(src / "notes.txt", b"B" * SIZE, LATER)  # same size, new mtime, other content

    doc = plan_json(dest, src, state)
    ops = {o["path"]: o for o in doc["operations"]}
    assert sorted(p for p, o in ops.items() if o["op"] == "touch") == sorted(data)
    assert [p for p, o in ops.items() if o["op"] == "upload"] == ["notes.txt"]
    assert doc["summary"]["touch"] == {"count": N, "bytes_saved": N * SIZE}
    assert doc["summary"]["upload"]["count"] == 1
    table = cli(dest, "plan", src, dest.url, "--state-dir", state)
    assert sum(1 for line in table.stdout.splitlines() if line.startswith("touch\t")) == N
    assert f"{N} files to touch" in table.stderr + table.stdout

    sent_before = proxy.bytes_up if proxy else 0
    applied = cli(dest, "apply", src, dest.url, "--state-dir", state)
    assert f"{N + 1} done ({N} touched: mtime set, no content sent)" in applied.stderr
    if proxy is not None:
        sent = proxy.bytes_up - sent_before
        # notes.txt's 50 KB plus protocol; the touched files' 1 MB must not travel
        assert SIZE <= sent < SIZE + N * 2_000 + 60_000, sent

    stored = read_dest(dest)
    for i, (path, body) in enumerate(data.items()):
        assert stored.files[path] == body
        assert stored.mtime_s[path] == LATER // SEC + i
        assert identity(dest, path) == before[path]  # never rewritten
    assert stored.files["notes.txt"] == b"B" * SIZE
    assert stored.mtime_s["notes.txt"] == LATER // SEC
    if dest.kind == "s3":
        for path in data:  # the xxh3 (and everything else) kept, only the mtime new
            after = s3_metadata(dest, path)
            assert after["xxh3"] == meta_before[path]["xxh3"]
            assert {k: v for k, v in after.items() if k != "mtime"} == \
                {k: v for k, v in meta_before[path].items() if k != "mtime"}
    assert plan_json(dest, src, state)["operations"] == []


def test_s3_touch_holds_without_the_state_folder(s3_dest, tmp_path):
    """the bucket's xxh3 metadata is enough: a lost state folder still touches."""
    dest = s3_dest
    src, state = tmp_path / "src", tmp_path / "state"
    data = {f"p{i}.bin": os.urandom(SIZE) for i in range(5)}
    for path, body in data.items():
        write(src / path, body, T0)
    cli(dest, "apply", src, dest.url, "--state-dir", state)
    shutil.rmtree(state)
    shutil.rmtree(dest.options.state_dir, ignore_errors=True)
    for path in data:
        os.utime(src / path, ns=(LATER, LATER))
    doc = plan_json(dest, src, state)
    assert sorted(o["path"] for o in doc["operations"] if o["op"] == "touch") == sorted(data)
    assert not [o for o in doc["operations"] if o["op"] == "upload"]
    cli(dest, "apply", src, dest.url, "--state-dir", state)
    stored = read_dest(dest)
    assert all(stored.mtime_s[p] == LATER // SEC and stored.files[p] == data[p] for p in data)
    assert plan_json(dest, src, state)["operations"] == []


def test_touch_again_is_harmless_and_another_file_is_not_touched(dest, tmp_path):
    """a journal replays a touch: the second one changes nothing. A remote file
    that is not the plan's (other size; on S3 other xxh3) is refused with
    NotFound, which apply answers with an upload."""
    import xxhash

    from reconcile.entry import Entry
    from reconcile.errors import NotFound
    from reconcile.remotes import open_remote

    body = os.urandom(SIZE)
    local = tmp_path / "f.bin"
    write(local, body, T0)
    digest = xxhash.xxh3_128_digest(body)
    remote = open_remote(dest.url, dest.options)
    try:
        remote.upload(str(local), "d/f.bin", Entry("d/f.bin", size=SIZE, mtime_ns=T0, hash=digest))
        touched = Entry("d/f.bin", size=SIZE, mtime_ns=LATER, hash=digest)
        remote.touch("d/f.bin", touched)
        remote.touch("d/f.bin", touched)
        stored = read_dest(dest)
        assert stored.files["d/f.bin"] == body and stored.mtime_s["d/f.bin"] == LATER // SEC
        with pytest.raises(NotFound):
            remote.touch("d/f.bin", Entry("d/f.bin", size=SIZE + 1, mtime_ns=T0, hash=digest))
        with pytest.raises(NotFound):
            remote.touch("d/gone.bin", touched)
        if dest.kind == "s3":
            with pytest.raises(NotFound):
                remote.touch("d/f.bin", Entry("d/f.bin", size=SIZE, mtime_ns=T0, hash=b"\0" * 16))
        assert read_dest(dest).mtime_s["d/f.bin"] == LATER // SEC
    finally:
        remote.close()


def test_s3_object_replaced_behind_our_back_is_not_touched(s3_dest, tmp_path):
    """our record still says the object holds our xxh3, but another tool wrote
    other bytes of the same size since: the copy is conditional on the ETag we
    recorded, so the object is refused (NotFound: apply uploads instead) and
    never labelled with a hash it does not hold."""
    import xxhash

    from reconcile.entry import Entry
    from reconcile.errors import NotFound
    from reconcile.remotes import open_remote
    from tests.servers_s3 import boto3_client

    dest = s3_dest
    body, other = os.urandom(SIZE), os.urandom(SIZE)
    write(tmp_path / "f.bin", body, T0)
    digest = xxhash.xxh3_128_digest(body)
    remote = open_remote(dest.url, dest.options)
    try:
        remote.upload(str(tmp_path / "f.bin"), "f.bin", Entry("f.bin", size=SIZE, mtime_ns=T0, hash=digest))
        bucket, _, prefix = dest.url[len("s3://"):].partition("/")
        boto3_client(dest.options.s3.endpoint).put_object(Bucket=bucket, Key=f"{prefix}/f.bin", Body=other)
        with pytest.raises(NotFound):
            remote.touch("f.bin", Entry("f.bin", size=SIZE, mtime_ns=LATER, hash=digest))
    finally:
        remote.close()
    assert "xxh3" not in s3_metadata(dest, "f.bin")
    assert read_dest(dest).files["f.bin"] == other


def test_apply_sends_the_file_where_the_remote_no_longer_holds_it(dest, tmp_path):
    """between plan and apply the remote file changed (other size): the touch
    op uploads it instead; the other touch op, run twice as a replayed journal
    would, only sets the mtime."""
    import xxhash

    from reconcile import journal as journal_mod
    from reconcile.apply import Executor
    from reconcile.entry import FILE, Entry
    from reconcile.plan import Op
    from reconcile.remotes import open_remote
    from reconcile.remotes.retry import RetryingRemote, RetryPolicy
    from tests.mirror import SilentReporter

    src = tmp_path / "src"
    data = {"same.bin": os.urandom(SIZE), "changed.bin": os.urandom(SIZE)}
    remote = RetryingRemote(open_remote(dest.url, dest.options), RetryPolicy(5, sleep=lambda _: None))
    try:
        for path, body in data.items():
            write(src / path, body, T0)
            remote.upload(str(src / path), path, Entry(path, size=SIZE, mtime_ns=T0,
                                                       hash=xxhash.xxh3_128_digest(body)))
        write(tmp_path / "other", b"x" * 10, T0)
        remote.upload(str(tmp_path / "other"), "changed.bin", Entry("changed.bin", size=10, mtime_ns=T0))
        ops = []
        for path, body in data.items():
            os.utime(src / path, ns=(LATER, LATER))
            e = Entry(path, FILE, SIZE, LATER, hash=xxhash.xxh3_128_digest(body))
            ops.append(Op("touch", path, FILE, size=SIZE, entry=e))
        for _ in range(2):
            j = journal_mod.Journal(str(tmp_path / "journal"))
            j.start({"plan_id": "t"}, ops)
            reporter = SilentReporter()
            outcome = Executor(remote, str(src), j, reporter).run(ops, [0, 1])
            j.finish()
            assert outcome.complete and reporter.failed == []
    finally:
        remote.close()
    stored = read_dest(dest)
    assert stored.files == data
    assert stored.mtime_s == {p: LATER // SEC for p in data}
