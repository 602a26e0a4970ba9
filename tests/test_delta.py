"""Delta transfer of large files (issue 26 item 3): a changed file of 64 MiB
or more sends only its changed 8 MiB blocks; the others are copied on the
remote from its old version (SFTP copy-data, S3 UploadPartCopy, a local
copy_file_range). The result is always byte-exact, and a doubt (the old
remote file altered behind our back, a server without copy-data, the file
changing while it is sent) means the whole file, never a mixed one.

Bytes are counted by a TCP proxy in front of the real sshd or SeaweedFS;
every check reads the storage itself. The files are 80 MiB (ten blocks):
above the 64 MiB threshold, small enough to be quick."""

from __future__ import annotations

import json
import os
import random
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.cli import reconcile
from tests.kill import start_stalled
from tests.mirror import write
from tests.proxied import proxied  # noqa: F401 (a fixture)
from tests.storage import read_dest

MiB = 1 << 20
BLOCK = 8 * MiB
SIZE = 80 * MiB
OVERHEAD = MiB  # protocol bytes of a run beside content: sign-in, listing, headers
T0 = 1_600_000_000 * 10**9


LOCAL_DELTA = {"RECONCILE_TEST_LOCAL_DELTA": "1"}  # the test folders are on ext4: no reflink, no delta else


@pytest.fixture(params=["local", "sftp", "s3"])
def dest(request):
    d = request.getfixturevalue(f"{request.param}_dest")
    return replace(d, env={**d.env, **LOCAL_DELTA}) if d.kind == "local" else d


def apply(dest, src, state, *more) -> dict:
    p = reconcile("apply", src, dest.url, "--state-dir", state, "--json", *more, *dest.cli_args, env=dest.env,
                  check=0)
    return json.loads(p.stdout)["totals"]


def sent_by(proxy, run) -> tuple[dict, int]:
    """run()'s totals and the bytes that reached the server meanwhile (local: None)"""
    before = proxy.bytes_up if proxy else 0
    totals = run()
    return totals, (proxy.bytes_up - before if proxy else None)


def remote_file(dest, rel: str) -> Path | None:
    """where the remote file lies on this machine (local, SFTP); None on S3"""
    if dest.kind == "local":
        return Path(dest.url) / rel
    if dest.kind == "sftp":
        return Path(unquote(urlsplit(dest.url).path)) / rel
    return None


def overwrite_remote(dest, rel: str, data: bytes, keep_mtime: bool = False) -> None:
    """change the remote copy behind reconcile's back, same size"""
    path = remote_file(dest, rel)
    if path is None:
        from tests.servers_s3 import boto3_client

        bucket, _, prefix = dest.url[len("s3://"):].partition("/")
        client = boto3_client(dest.options.s3.endpoint)
        key = f"{prefix}/{rel}"
        meta = client.head_object(Bucket=bucket, Key=key)["Metadata"]
        client.put_object(Bucket=bucket, Key=key, Body=data, Metadata=meta)
        return
    st = path.stat()
    with open(path, "r+b") as f:
        f.write(data)
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def first_upload(proxied, tmp_path) -> tuple:
    dest, proxy = proxied
    src, state = tmp_path / "src", tmp_path / "state"
    data = bytearray(random.randbytes(SIZE))
    write(src / "disk.img", bytes(data), T0)
    totals = apply(dest, src, state)
    assert totals["bytes_saved"]["delta"] == 0 and totals["bytes_sent"] == SIZE
    return dest, proxy, src, state, data


def test_a_change_in_the_middle_and_an_append_send_only_their_blocks(proxied, tmp_path):  # noqa: F811
    dest, proxy, src, state, data = first_upload(proxied, tmp_path)
    middle = SIZE // 2 - MiB // 2  # 1 MiB across the boundary of blocks 4 and 5
    data[middle:middle + MiB] = random.randbytes(MiB)
    write(src / "disk.img", bytes(data), T0 + 10**9)
    totals, wire = sent_by(proxy, lambda: apply(dest, src, state))
    assert totals["bytes_sent"] == 2 * BLOCK and totals["bytes_saved"]["delta"] == SIZE - 2 * BLOCK
    if wire is not None:
        assert wire <= 2 * BLOCK + OVERHEAD, wire
    assert read_dest(dest).files["disk.img"] == data

    data += random.randbytes(MiB)  # appended: only the new last block travels
    write(src / "disk.img", bytes(data), T0 + 2 * 10**9)
    totals, wire = sent_by(proxy, lambda: apply(dest, src, state))
    assert totals["bytes_sent"] == MiB and totals["bytes_saved"]["delta"] == SIZE
    if wire is not None:
        assert wire <= MiB + OVERHEAD, wire
    stored = read_dest(dest)
    assert stored.files["disk.img"] == data and not stored.temps


def test_an_old_remote_file_changed_behind_our_back_is_sent_whole(proxied, tmp_path):  # noqa: F811
    dest, proxy, src, state, data = first_upload(proxied, tmp_path)
    overwrite_remote(dest, "disk.img", random.randbytes(SIZE))
    data[:MiB] = random.randbytes(MiB)
    write(src / "disk.img", bytes(data), T0 + 10**9)
    totals = apply(dest, src, state)
    assert totals["bytes_sent"] == SIZE and totals["bytes_saved"]["delta"] == 0
    assert read_dest(dest).files["disk.img"] == data


def test_a_local_copy_altered_with_its_mtime_kept_is_caught_by_the_read_back(local_dest, tmp_path):
    dest, _, src, state, data = first_upload((replace(local_dest, env=LOCAL_DELTA), None), tmp_path)
    overwrite_remote(dest, "disk.img", b"\0" * MiB, keep_mtime=True)  # block 0: same size, mtime, inode
    data[-MiB:] = random.randbytes(MiB)
    write(src / "disk.img", bytes(data), T0 + 10**9)
    totals = apply(dest, src, state)
    assert totals["bytes_sent"] == SIZE and totals["bytes_saved"]["delta"] == 0
    assert read_dest(dest).files["disk.img"] == data


def test_a_file_changing_while_its_blocks_are_sent_is_never_mixed(proxied, tmp_path):  # noqa: F811
    dest, _, src, state, data = first_upload(proxied, tmp_path)
    old = bytes(data)
    data[3 * BLOCK:3 * BLOCK + 10] = b"x" * 10
    data[6 * BLOCK:6 * BLOCK + 10] = b"y" * 10
    write(src / "disk.img", bytes(data), T0 + 10**9)
    args = ["-m", "reconcile", "apply", src, dest.url, "--state-dir", state, *dest.cli_args]
    import sys

    stalled = start_stalled([sys.executable, *map(str, args)], "upload:1", state, tmp_path / "marker",
                            env=dest.env)
    stalled.wait()
    with open(src / "disk.img", "r+b") as f:  # a block the delta copies on the remote changes now
        f.write(b"z" * 10)
    os.utime(src / "disk.img", ns=(T0, T0 + 5 * 10**9))
    stalled.release()
    stalled.child.wait(timeout=120)
    got = read_dest(dest).files["disk.img"]
    assert got == old, "the version changed while sent must not be in place"
    apply(dest, src, state)
    final = bytearray(data)
    final[:10] = b"z" * 10
    stored = read_dest(dest)
    assert stored.files["disk.img"] == final and not stored.temps


def entry_of(path: Path, rel: str):
    from reconcile.entry import Entry

    st = path.stat()
    return Entry(rel, size=st.st_size, mtime_ns=st.st_mtime_ns)


def test_a_folder_without_reflinks_gets_the_whole_file(local_dest, tmp_path):
    """on ext4 a delta would write as much as a full copy and read more: none"""
    dest, _, src, state, data = first_upload((local_dest, None), tmp_path)
    data[:MiB] = random.randbytes(MiB)
    write(src / "disk.img", bytes(data), T0 + 10**9)
    totals = apply(dest, src, state)
    assert totals["bytes_sent"] == SIZE and totals["bytes_saved"]["delta"] == 0
    assert read_dest(dest).files["disk.img"] == data


@pytest.fixture(scope="module")
def sshd_refusing_copies(tmp_path_factory):
    """an sshd whose sftp-server refuses copy-data requests (-P copy-data)"""
    from tests.servers_sftp import run_sshd

    yield from run_sshd(tmp_path_factory.mktemp("sshd-no-copy"), "ForceCommand internal-sftp -P copy-data\n")


@pytest.fixture(params=["copy-data", "client-off", "server-refuses"])
def sftp_case(request, tmp_path):
    """an SFTP destination with copy-data, with it turned off on the client
    side, and on a server that refuses it"""
    from dataclasses import replace

    from tests.servers_sftp import sftp_url

    if request.param == "server-refuses":
        server = request.getfixturevalue("sshd_refusing_copies")
        root = tmp_path / "refusing-root"
        root.mkdir()
        kh = server.write_known_hosts(tmp_path / "known_hosts_refusing")
        dest = request.getfixturevalue("sftp_dest")
        dest = replace(dest, url=sftp_url(server, root),
                       options=replace(dest.options, sftp=replace(dest.options.sftp, known_hosts=kh, key=server.user_key)))
    else:
        dest = request.getfixturevalue("sftp_dest")
    off = request.param == "client-off"
    return dest, replace(dest.options, extra={**dest.options.extra, "sftp_copy_data": not off}), \
        request.param == "copy-data"


def test_sftp_without_copy_data_sends_the_whole_file(sftp_case, tmp_path):
    """a server without the copy-data extension gets the whole file, as
    before deltas existed; so does a client told not to use it"""
    from reconcile.remotes import open_remote

    sftp_dest, options, copy_data = sftp_case
    local = tmp_path / "disk.img"
    data = bytearray(random.randbytes(SIZE))
    write(local, bytes(data), T0)
    remote = open_remote(sftp_dest.url, options)
    try:
        assert remote.capabilities.delta
        assert remote.upload(str(local), "disk.img", entry_of(local, "disk.img")).reused == 0
        data[BLOCK:BLOCK + 100] = b"n" * 100
        write(local, bytes(data), T0 + 10**9)
        sent: list[int] = []
        got = remote.upload(str(local), "disk.img", entry_of(local, "disk.img"), progress=sent.append)
    finally:
        remote.close()
    assert (got.reused, sum(sent)) == ((SIZE - BLOCK, BLOCK) if copy_data else (0, SIZE))
    stored = read_dest(sftp_dest)
    assert stored.files["disk.img"] == data and not stored.temps


def test_a_delta_killed_midway_is_finished_exactly_by_the_next_run(proxied, tmp_path):  # noqa: F811
    """SIGKILL while the changed blocks go out: the old version stays in
    place, and the next run (resuming the journal's temp file where it can)
    leaves the new version, byte for byte, and no temp file"""
    import sys

    dest, proxy, src, state, data = first_upload(proxied, tmp_path)
    old = bytes(data)
    for block in (2, 5, 8):
        data[block * BLOCK + 7:block * BLOCK + MiB] = random.randbytes(MiB - 7)
    write(src / "disk.img", bytes(data), T0 + 10**9)
    args = ["-m", "reconcile", "apply", src, dest.url, "--state-dir", state, *dest.cli_args]
    stalled = start_stalled([sys.executable, *map(str, args)], "upload:1", state, tmp_path / "marker",
                            env=dest.env)
    stalled.kill()
    assert read_dest(dest).files["disk.img"] == old
    totals, wire = sent_by(proxy, lambda: apply(dest, src, state))
    stored = read_dest(dest)
    assert stored.files["disk.img"] == data and not stored.temps
    if wire is not None:
        assert wire <= 3 * BLOCK + OVERHEAD, wire  # at most the changed blocks again


def test_a_touched_file_keeps_its_blocks_for_the_next_delta(proxied, tmp_path):  # noqa: F811
    """a touch gives the remote file new metadata (mtime; on S3 a new ETag)
    and the same content: its block record follows, so a later edit is a delta"""
    dest, proxy, src, state, data = first_upload(proxied, tmp_path)
    os.utime(src / "disk.img", ns=(T0, T0 + 50 * 10**9))
    totals = apply(dest, src, state)
    assert totals["bytes_saved"]["touch"] == SIZE and totals["bytes_sent"] == 0
    data[3 * BLOCK:3 * BLOCK + 10] = b"t" * 10
    write(src / "disk.img", bytes(data), T0 + 60 * 10**9)
    totals = apply(dest, src, state)
    assert totals["bytes_sent"] == BLOCK and totals["bytes_saved"]["delta"] == SIZE - BLOCK
    assert read_dest(dest).files["disk.img"] == data
