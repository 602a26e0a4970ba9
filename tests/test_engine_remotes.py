"""The whole command line against every remote kind: local folder, real
sshd, real SeaweedFS. The mirror is checked by reading the storage itself:
the folder on disk, or the bucket through a plain boto3 client."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import sys
from pathlib import Path

import pytest

from reconcile.remotes import open_remote
from tests.cli import reconcile
from tests.kill import start_stalled
from tests.mirror import tree, write
from tests.storage import read_dest, torn

T0 = 1_600_000_000_000_000_000


def remote_tree(dest, tmp_path: Path | None = None) -> dict[str, tuple]:
    """what the remote's storage holds, read from disk or with a plain boto3
    client (never through reconcile's own list/download)."""
    stored = read_dest(dest)
    out: dict[str, tuple] = {d: ("d",) for d in stored.dirs}  # S3 has no folders of its own
    for path, data in stored.files.items():
        out[path] = ("f", data, stored.mtime_s[path])
    return out


def leftover_temps(dest) -> list[str]:
    """temp names on the remote, and on S3 unfinished multipart uploads too."""
    return read_dest(dest).temps


def local_view(src: Path, dest) -> dict[str, tuple]:
    out = {}
    for path, v in tree(src).items():
        if v[0] == "d":
            if dest.kind != "s3":
                out[path] = v
        else:
            out[path] = ("f", v[1], v[2] // 1_000_000_000)
    return out


def cli(dest, *args, check=0):
    return reconcile(*args, *dest.cli_args, env=dest.env, check=check)


def test_mirror_moves_deletes_and_edits(dest, tmp_path):
    src, state = tmp_path / "src", tmp_path / "state"
    for i in range(30):
        write(src / "album" / f"sub{i % 3}" / f"p{i}.jpg", os.urandom(500 + i), T0 + i * 10**9)
    write(src / "docs" / "a b.txt", b"spaces", T0)
    write(src / "docs" / "café.txt", b"accent", T0)
    (src / "empty-dir").mkdir(parents=True)
    cli(dest, "apply", src, dest.url, "--state-dir", state)
    assert remote_tree(dest, tmp_path) == local_view(src, dest)

    (src / "album").rename(src / "album-2026")
    write(src / "docs" / "a b.txt", b"edited", T0 + 10**12)
    (src / "docs" / "café.txt").unlink()
    doc = json.loads(cli(dest, "plan", src, dest.url, "--state-dir", state, "--delete", "--json").stdout)
    ops = doc["operations"]
    assert {"op": "move", "kind": "dir", "from": "album", "to": "album-2026", "files": 30} in ops
    assert doc["summary"]["upload"]["count"] == 1
    cli(dest, "apply", src, dest.url, "--state-dir", state, "--delete")
    assert remote_tree(dest, tmp_path) == local_view(src, dest)
    assert leftover_temps(dest) == []
    again = json.loads(cli(dest, "plan", src, dest.url, "--state-dir", state, "--delete", "--json").stdout)
    assert again["operations"] == []


def test_remote_drift_is_repaired(dest, tmp_path):
    src, state = tmp_path / "src", tmp_path / "state"
    for i in range(5):
        write(src / f"f{i}", os.urandom(100), T0)
    cli(dest, "apply", src, dest.url, "--state-dir", state)
    r = open_remote(dest.url, dest.options)
    try:
        r.delete("f1")
    finally:
        r.close()
    doc = json.loads(cli(dest, "plan", src, dest.url, "--state-dir", state, "--json").stdout)
    assert doc["operations"] == [{"op": "upload", "path": "f1", "size": 100, "reason": "new"}]
    cli(dest, "apply", src, dest.url, "--state-dir", state)
    assert remote_tree(dest, tmp_path) == local_view(src, dest)


@pytest.mark.parametrize("seed", range(int(os.environ.get("RECONCILE_REMOTE_CRASH_TRIALS", "4"))))
def test_sigkill_then_resume_converges(dest, tmp_path, seed):
    rng = random.Random(seed)
    src, state = tmp_path / "src", tmp_path / "state"
    for i in range(60):
        write(src / f"d{i % 4}" / f"s{i}", rng.randbytes(rng.randint(1, 3000)), T0 + i)
    write(src / "big", rng.randbytes(6_000_000), T0)
    cli(dest, "apply", src, dest.url, "--state-dir", state)
    old = {p: v[1] for p, v in tree(src).items() if v[0] == "f"}
    (src / "d1").rename(src / "d1-new")
    # over the 8 MiB a local copy sends at a time: a kill can find it half written
    write(src / "big", rng.randbytes(10_000_000), T0 + 10**12)
    for i in range(30):
        write(src / "new" / f"n{i}", rng.randbytes(rng.randint(1, 3000)), T0 + i)
    args = [sys.executable, "-m", "reconcile", "apply", str(src), dest.url, "--state-dir", str(state),
            "--delete", "-q", *dest.cli_args]
    # a local copy reports a file half sent once (8 MiB at a time); SFTP and S3 every 64 KiB or so
    later = f"upload:{rng.randint(2, 20)}" if dest.kind != "local" else f"op:{rng.randint(1, 32)}"
    point = ["upload", "move", f"op:{rng.randint(1, 32)}", later][seed % 4]
    start_stalled(args, point, state, tmp_path / "stalled", env=dest.env).kill()
    new = {p: v[1] for p, v in tree(src).items() if v[0] == "f"}
    stored = read_dest(dest)
    # S3 too: each PUT carries Content-MD5, so SeaweedFS cannot keep one cut mid-body
    assert [(p, len(stored.files[p]), "bytes") for p in torn(stored, old, new)] == []
    cli(dest, "apply", src, dest.url, "--state-dir", state, "--delete")
    assert remote_tree(dest, tmp_path) == local_view(src, dest)
    assert leftover_temps(dest) == []


def test_missing_destination_root_is_created(dest, tmp_path):
    src, state = tmp_path / "src", tmp_path / "state"
    write(src / "a" / "f", b"payload", T0)
    url = dest.url.rstrip("/") + "/not/yet/there"
    if dest.kind in ("local", "exfat", "ntfs"):  # a local folder: only its last folder is made, as rsync
        p = reconcile("apply", src, url, "--state-dir", state, check=2)
        assert "not does not exist, and reconcile makes only the destination's last folder" in p.stderr
        os.makedirs(url.removesuffix("/there"))
    reconcile("apply", src, url, "--state-dir", state, *dest.cli_args, env=dest.env, check=0)
    assert read_dest(dataclasses.replace(dest, url=url)).files == {"a/f": b"payload"}


def test_offline_plan_needs_no_remote(sshd_server, tmp_path):
    """record while offline: plan from the last-known state when the server is away"""
    from tests.servers_sftp import sftp_url

    src, state, root = tmp_path / "src", tmp_path / "state", tmp_path / "root"
    root.mkdir()
    kh = sshd_server.write_known_hosts(tmp_path / "kh")
    flags = ["--state-dir", state, "--ssh-key", sshd_server.user_key, "--known-hosts", kh]
    write(src / "a", b"1", T0)
    reconcile("apply", src, sftp_url(sshd_server, root), *flags, check=0)
    write(src / "b", b"22", T0)
    down = sftp_url(sshd_server, root, port=1)  # nothing listens on port 1
    reconcile("plan", src, down, *flags, "--retry-for", "0s", check=3)
    doc = json.loads(reconcile("plan", src, down, *flags, "--offline", "--json", check=0).stdout)
    assert doc["operations"] == [{"op": "upload", "path": "b", "size": 2, "reason": "new"}]
