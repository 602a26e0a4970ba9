"""reconcile restore on every remote kind (local folder, real sshd, real
SeaweedFS), through the real command line: round trips, no-op reruns,
subtrees, local files left alone, SIGKILL then resume, corruption, trash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest
import xxhash

from reconcile.entry import FILE, Entry
from reconcile.remotes import open_remote
from reconcile.restore_model import child_url, temp_name
from tests.cli import reconcile
from tests.mirror import tree, write

T0 = 1_600_000_000_123_456_789  # a fraction of a second: SFTP keeps whole seconds only
RUN = "2026-11-20T031500Z"


def cli(dest, *args, check=0):
    return reconcile(*args, *dest.cli_args, env=dest.env, check=check)


def restore(dest, out, *args, check=0) -> tuple[dict, str]:
    p = cli(dest, "restore", dest.url, out, "--json", *args, check=check)
    return json.loads(p.stdout), p.stderr


def make_source(src: Path) -> None:
    for i in range(12):
        write(src / "album" / f"sub{i % 3}" / f"p{i}.jpg", os.urandom(300 + i), T0 + i * 10**9)
    write(src / "docs" / "a b.txt", b"spaces", T0)
    write(src / "docs" / "café.txt", b"accent", T0 + 7)
    write(src / "empty.txt", b"", T0)
    (src / "empty-dir").mkdir(parents=True)


def view(root: Path, dest) -> dict[str, tuple]:
    """what a restore must reproduce: bytes, mtimes at the remote's precision,
    folders (not on S3, which has none)"""
    precision = 10**9 if dest.kind == "sftp" else 1
    out = {}
    for path, v in tree(root).items():
        if v[0] == "d":
            if dest.kind != "s3":
                out[path] = v
        else:
            out[path] = ("f", v[1], v[2] // precision)
    return out


def temps(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if ".reconcile-tmp-" in p.name]


def remote_disk_path(dest, rel: str) -> Path:
    """the file behind a local or sftp remote (the sshd runs on this machine)"""
    root = dest.url if dest.kind == "local" else unquote(urlsplit(dest.url).path)
    return Path(root, *rel.split("/"))


def put_remote(dest, tmp_path: Path, files: dict[str, tuple[bytes, int]]) -> None:
    """place files on the remote as apply would (mtime and, where kept, xxh3)"""
    r = open_remote(dest.url, dest.options)
    try:
        for rel, (data, mtime) in files.items():
            f = tmp_path / "upload.tmp"
            f.write_bytes(data)
            r.upload(str(f), rel, Entry(rel, FILE, len(data), mtime, hash=xxhash.xxh3_128(data).digest()))
    finally:
        r.close()


def test_round_trip_then_noop(dest, tmp_path):
    src, state, out = tmp_path / "src", tmp_path / "state", tmp_path / "out"
    make_source(src)
    cli(dest, "apply", src, dest.url, "--state-dir", state)

    doc, err = restore(dest, out, "--state-dir", state)
    assert view(out, dest) == view(src, dest)
    s = doc["summary"]
    assert (s["fetched"], s["identical"], s["kept_aside"], s["unverified"]) == (15, 0, 0, 0)
    assert s["bytes_fetched"] == sum(len(v[1]) for v in tree(src).values() if v[0] == "f")
    assert "restore: 15 fetched, 0 already identical, 0 kept aside, 0 unverified" in err
    assert temps(out) == []

    again, err = restore(dest, out, "--state-dir", state)
    assert again["operations"] == []
    assert (again["summary"]["identical"], again["summary"]["bytes_fetched"]) == (15, 0)
    assert "restore: 0 fetched, 15 already identical" in err


def test_subtree_and_local_files_left_alone(dest, tmp_path):
    src, state, out = tmp_path / "src", tmp_path / "state", tmp_path / "out"
    make_source(src)
    cli(dest, "apply", src, dest.url, "--state-dir", state)
    put_remote(dest, tmp_path, {f".reconcile-trash/{RUN}/old.txt": (b"trashed", T0)})

    doc, _ = restore(dest, out, "--path", "album/sub1", "--path", "/docs/a b.txt/")
    want = {k: v for k, v in view(src, dest).items() if k.startswith("album/sub1/") or k == "docs/a b.txt"}
    got = {k: v for k, v in view(out, dest).items() if v[0] == "f"}
    assert got == want
    # no hash known for local/sftp without the pair's snapshot: checked by size
    assert doc["summary"]["unverified"] == (0 if dest.kind == "s3" else 5)

    write(out / "docs" / "a b.txt", b"mine!!", T0 + 10**12)  # same size, other bytes
    doc, err = restore(dest, out, "--state-dir", state)
    assert (out / "docs" / "a b.txt").read_bytes() == b"mine!!"
    assert doc["local_differs"] == ["docs/a b.txt"] and "--overwrite" in err
    assert not (out / ".reconcile-trash").exists()  # the trash comes back only when asked

    plan, _ = restore(dest, out, "--state-dir", state, "--overwrite", "--dry-run")
    assert plan["operations"] == [{"op": "download", "path": "docs/a b.txt", "size": 6, "reason": "differs"}]
    assert (out / "docs" / "a b.txt").read_bytes() == b"mine!!"
    restore(dest, out, "--state-dir", state, "--overwrite")
    assert view(out, dest) == view(src, dest)


def test_sigkill_mid_restore_then_resume(dest, tmp_path):
    src, state, out = tmp_path / "src", tmp_path / "state", tmp_path / "out"
    big = os.urandom(30_000_000)
    write(src / "a-big.bin", big, T0)  # listed first: it starts at once
    for i in range(150):
        write(src / "small" / f"s{i:03}", os.urandom(1000 + i), T0 + i)
    cli(dest, "apply", src, dest.url, "--state-dir", state)
    total = sum(len(v[1]) for v in tree(src).values() if v[0] == "f")

    args = [sys.executable, "-m", "reconcile", "restore", dest.url, str(out), "--state-dir", str(state),
            "--transfers", "2", "-q", *dest.cli_args]
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, **dest.env})
    partial = wait_for_partial(out, child)
    child.send_signal(signal.SIGKILL)
    child.wait()
    arrived = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    big_tmp = [p.stat().st_size for p in out.glob(".reconcile-tmp-*")]

    doc, _ = restore(dest, out, "--state-dir", state)
    assert view(out, dest) == view(src, dest)
    assert temps(out) == []
    # nothing that arrived before the kill was fetched again
    assert doc["summary"]["bytes_fetched"] == total - arrived
    assert partial and 0 < big_tmp[0] < len(big)
    op = next(o for o in doc["operations"] if o["path"] == "a-big.bin")
    assert (op["resume_from"], op["fetched"], op["verified"]) == (big_tmp[0], len(big) - big_tmp[0], True)


def wait_for_partial(out: Path, child: subprocess.Popen, limit: float = 60.0) -> bool:
    """until the big file's temp holds some bytes (or the child is done)"""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and child.poll() is None:
        try:
            if any(p.stat().st_size > 0 for p in out.glob(".reconcile-tmp-*")):
                return True
        except OSError:
            pass
        time.sleep(0.0005)
    return False


def test_corrupt_remote_copy_is_kept_aside(dest, tmp_path):
    src, state, out = tmp_path / "src", tmp_path / "state", tmp_path / "out"
    make_source(src)
    cli(dest, "apply", src, dest.url, "--state-dir", state)
    corrupt(dest, "docs/café.txt", b"ACCENT")  # same size, same mtime, other bytes

    doc, err = restore(dest, out, "--state-dir", state, check=1)
    assert not (out / "docs" / "café.txt").exists()
    assert (out / "docs" / "café.txt.reconcile-corrupt").read_bytes() == b"ACCENT"
    assert doc["summary"]["kept_aside"] == 1 and doc["summary"]["fetched"] == 14
    op = next(o for o in doc["operations"] if o["path"] == "docs/café.txt")
    assert op["result"] == "corrupt"
    assert "corrupt: docs/café.txt" in err and "1 kept aside" in err
    assert "Traceback" not in err


def corrupt(dest, rel: str, data: bytes) -> None:
    if dest.kind != "s3":
        path = remote_disk_path(dest, rel)
        st = path.stat()
        assert st.st_size == len(data)
        path.write_bytes(data)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        return
    # S3: new bytes under the old metadata (mtime and xxh3), as a bad copy would
    r = open_remote(dest.url, dest.options)
    try:
        key = r._key(rel)
        head = r.client.head_object(Bucket=r.bucket, Key=key)
        assert head["ContentLength"] == len(data)
        r.client.put_object(Bucket=r.bucket, Key=key, Body=data, Metadata=head["Metadata"])
    finally:
        r.close()


def test_restore_from_trash(dest, tmp_path):
    src, state, out = tmp_path / "src", tmp_path / "state", tmp_path / "out"
    make_source(src)
    cli(dest, "apply", src, dest.url, "--state-dir", state)
    # the trash of the controls issue: the versions one run replaced or deleted
    kept = {"docs/a b.txt": (b"before", T0 - 10**12), "gone/deleted.txt": (b"deleted file", T0 - 5 * 10**9)}
    put_remote(dest, tmp_path, {f".reconcile-trash/{RUN}/{k}": v for k, v in kept.items()})
    put_remote(dest, tmp_path, {".reconcile-trash/2026-11-20T151500Z/x": (b"x", T0),
                                ".reconcile-trash/2026-11-21T000000Z/y": (b"yy", T0)})

    runs = json.loads(cli(dest, "restore", dest.url, "--list-trash", "--json").stdout)["runs"]
    assert runs == [{"run": RUN, "files": 2, "bytes": 18}, {"run": "2026-11-20T151500Z", "files": 1, "bytes": 1},
                    {"run": "2026-11-21T000000Z", "files": 1, "bytes": 2}]
    p = cli(dest, "restore", dest.url, out, "--from-trash", "2026-11-20", check=2)
    assert RUN in p.stderr and "2026-11-20T151500Z" in p.stderr

    doc, _ = restore(dest, out, "--from-trash", "2026-11-20T03")
    assert doc["run"] == RUN and doc["summary"]["fetched"] == 2
    precision = 10**9 if dest.kind == "sftp" else 1
    assert view(out, dest) == {**({} if dest.kind == "s3" else {"docs": ("d",), "gone": ("d",)}),
                               **{k: ("f", d, m // precision) for k, (d, m) in kept.items()}}

    # into a full restore: the trashed version differs, so only with --overwrite
    full = tmp_path / "full"
    restore(dest, full, "--state-dir", state)
    doc, _ = restore(dest, full, "--from-trash", RUN[:13])
    assert doc["local_differs"] == ["docs/a b.txt"] and (full / "gone" / "deleted.txt").exists()
    restore(dest, full, "--from-trash", RUN[:13], "--overwrite")
    assert (full / "docs" / "a b.txt").read_bytes() == b"before"


def test_unknown_host_key_is_a_config_error(sftp_dest, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    p = reconcile("restore", sftp_dest.url, tmp_path / "out", "--ssh-key", sftp_dest.options.sftp.key,
                  "--known-hosts", empty, check=2)
    assert "unknown host" in p.stderr and "--accept-new-host-key" in p.stderr
    assert not (tmp_path / "out").exists()


def s3_put_plain(dest, rel: str, data: bytes) -> None:
    """an object as another tool writes it: no mtime, no xxh3 metadata"""
    r = open_remote(dest.url, dest.options)
    try:
        r.client.put_object(Bucket=r.bucket, Key=r._key(rel), Body=data)
    finally:
        r.close()


@pytest.mark.parametrize("with_state", [False, True])
def test_s3_object_without_mtime_is_never_identical_by_size(s3_dest, tmp_path, with_state):
    src, state, out = tmp_path / "src", tmp_path / "state", tmp_path / "out"
    write(src / "report.txt", b"old report v1", T0)
    cli(s3_dest, "apply", src, s3_dest.url, "--state-dir", state)
    s3_put_plain(s3_dest, "report.txt", b"NEW REPORT v2")  # same size, no metadata
    write(out / "report.txt", b"old report v1", T0)
    extra = ["--state-dir", str(state)] if with_state else []

    doc, err = restore(s3_dest, out, *extra)
    assert doc["local_differs"] == ["report.txt"] and doc["summary"]["identical"] == 0
    assert (out / "report.txt").read_bytes() == b"old report v1"

    doc, err = restore(s3_dest, out, *extra, "--overwrite")
    assert (out / "report.txt").read_bytes() == b"NEW REPORT v2"
    s = doc["summary"]
    # the snapshot's hash is of the old version: it must not vouch for this one
    assert (s["fetched"], s["identical"], s["kept_aside"], s["unverified"]) == (1, 0, 0, 1)


def test_from_trash_with_state_dir_ignores_the_live_snapshot(dest, tmp_path):
    src, state, out = tmp_path / "src", tmp_path / "state", tmp_path / "out"
    make_source(src)
    cli(dest, "apply", src, dest.url, "--state-dir", state)
    # the trashed version has the live one's size and mtime, other bytes
    put_remote(dest, tmp_path, {f".reconcile-trash/{RUN}/docs/a b.txt": (b"before", T0)})

    doc, err = restore(dest, out, "--from-trash", RUN, "--state-dir", state)
    assert (out / "docs" / "a b.txt").read_bytes() == b"before"
    assert doc["summary"]["kept_aside"] == 0 and doc["summary"]["fetched"] == 1
    assert not (out / "docs" / "a b.txt.reconcile-corrupt").exists()


def test_empty_or_mistyped_remote_is_a_config_error(dest, tmp_path):
    out = tmp_path / "out"
    for url in (dest.url, child_url(dest.url, "typo")):
        p = reconcile("restore", url, out, *dest.cli_args, env=dest.env, check=2)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "check the URL" in lines[0], p.stderr
        assert "typo" in lines[0] or url == dest.url
    assert not out.exists()


@pytest.mark.parametrize("spell", ["uri", "localhost"])
def test_file_url_overlap_is_decoded(tmp_path, spell):
    backup = tmp_path / "sp ace"
    write(backup / "f.txt", b"data", T0)
    url = backup.as_uri() if spell == "uri" else "file://localhost" + quote(str(backup))
    assert "%20" in url
    p = reconcile("restore", url, backup / "restored", check=2)
    assert "overlap" in p.stderr
    assert sorted(os.listdir(backup)) == ["f.txt"]
    reconcile("restore", url, tmp_path / "elsewhere", check=0)
    assert (tmp_path / "elsewhere" / "f.txt").read_bytes() == b"data"


def test_restore_of_a_subprefix_leaves_the_pairs_s3_record_alone(s3_dest, tmp_path):
    src, state, out = tmp_path / "src", tmp_path / "state", tmp_path / "out"
    make_source(src)
    cli(s3_dest, "apply", src, s3_dest.url, "--state-dir", state)
    record = state / "remote" / "s3-record.msgpack"
    before = record.read_bytes()

    p = reconcile("restore", f"{s3_dest.url}/album", out, "--state-dir", state, *s3_dest.cli_args,
                  env=s3_dest.env, check=0)
    assert "12 fetched" in p.stderr
    assert record.read_bytes() == before
    assert sorted(os.listdir(state / "remote")) == ["s3-record.msgpack"]


def test_path_restore_keeps_other_files_partials(dest, tmp_path):
    src, state, out = tmp_path / "src", tmp_path / "state", tmp_path / "out"
    make_source(src)
    cli(dest, "apply", src, dest.url, "--state-dir", state)
    listed = {e.path: e for e in listing(dest)}
    (out / "docs").mkdir(parents=True)
    # a killed restore left half of "a b.txt"; one of café.txt is of an older version
    mine = out / "docs" / temp_name("docs/a b.txt", listed["docs/a b.txt"])
    mine.write_bytes(b"spa")
    old = listed["docs/café.txt"]
    stale = out / "docs" / temp_name("docs/café.txt", Entry(old.path, FILE, old.size + 1, old.mtime_ns))
    stale.write_bytes(b"x")

    restore(dest, out, "--state-dir", state, "--path", "docs/café.txt")
    assert (out / "docs" / "café.txt").read_bytes() == b"accent"
    assert mine.read_bytes() == b"spa" and not stale.exists()

    doc, _ = restore(dest, out, "--state-dir", state, "--path", "docs/a b.txt")
    op = doc["operations"][0]
    assert (op["resume_from"], op["fetched"], op["result"]) == (3, 3, "done")
    assert (out / "docs" / "a b.txt").read_bytes() == b"spaces" and temps(out) == []


def listing(dest) -> list[Entry]:
    r = open_remote(dest.url, dest.options)
    try:
        return list(r.list())
    finally:
        r.close()


def test_local_file_where_the_remote_has_a_folder(dest, tmp_path):
    src, state, out = tmp_path / "src", tmp_path / "state", tmp_path / "out"
    make_source(src)
    cli(dest, "apply", src, dest.url, "--state-dir", state)
    write(out / "album" / "sub1", b"a file, not a folder", T0)

    doc, err = restore(dest, out, "--state-dir", state, check=1)
    under = sorted(k for k in tree(src) if k.startswith("album/sub1/"))
    blocked = {b["path"]: b["error"] for b in doc["blocked"]}
    assert set(under) <= set(blocked) <= {"album/sub1", *under}
    assert all("stands where the remote has" in e for e in blocked.values())
    assert all("album/sub1 stands" in e for k, e in blocked.items() if k != "album/sub1")
    # everything else arrived
    want = {k: v for k, v in view(src, dest).items() if not k.startswith("album/sub1")}
    assert {k: v for k, v in view(out, dest).items() if k != "album/sub1"} == want
    assert (out / "album" / "sub1").read_bytes() == b"a file, not a folder"
    s = doc["summary"]
    assert (s["fetched"], s["failed"]) == (15 - len(under), len(blocked))
    assert f"failed: {under[0]}: " in err and f"{len(blocked)} failed" in err
    assert "restore: " in err and "File exists" not in err


def test_names_are_never_rich_markup(local_dest, tmp_path):
    root = Path(local_dest.url)
    write(root / "[bold]z", b"z", T0)
    write(root / ".reconcile-trash" / "[red]run" / "x", b"x", T0)
    p = cli(local_dest, "restore", local_dest.url, tmp_path / "out", "--dry-run")
    assert "[bold]z" in p.stdout
    p = cli(local_dest, "restore", local_dest.url, "--list-trash")
    assert "[red]run" in p.stdout
