"""The controls users expect from rsync and rclone, on every remote kind."""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import pytest

from reconcile.remotes import open_remote
from tests.cli import reconcile
from tests.kill import start_stalled
from tests.mirror import write
from tests.storage import read_dest
from tests.test_engine_remotes import cli, local_view, remote_tree

T0 = 1_600_000_000_000_000_000


def trash_runs(dest, tmp_path=None) -> dict[str, dict[str, bytes]]:
    """run folder -> {relative path: content} under .trash, read from the storage itself."""
    runs: dict[str, dict[str, bytes]] = {}
    for path, data in read_dest(dest).files.items():
        if path.startswith(".trash/"):
            _, run, rel = path.split("/", 2)
            runs.setdefault(run, {})[rel] = data
    return runs


def test_backup_dir_keeps_overwritten_and_deleted_versions(dest, tmp_path):
    src, state = tmp_path / "src", tmp_path / "state"
    write(src / "edited.txt", b"version 1", T0)
    write(src / "deleted.txt", b"deleted content", T0)
    write(src / "dir" / "inner.txt", b"inner", T0)
    write(src / "keep.txt", b"k", T0)
    write(src / "keep2.txt", b"k", T0)
    write(src / "keep3.txt", b"k", T0)
    cli(dest, "apply", src, dest.url, "--state-dir", state)
    write(src / "edited.txt", b"version 2!", T0 + 10**12)
    (src / "deleted.txt").unlink()
    (src / "dir" / "inner.txt").unlink()
    (src / "dir").rmdir()
    flags = ["--state-dir", state, "--delete", "--backup-dir", ".trash"]
    doc = json.loads(cli(dest, "plan", src, dest.url, *flags, "--json").stdout)
    backups = {o.get("path"): o.get("backup", "") for o in doc["operations"]}
    assert all(b.startswith(".trash/") for b in backups.values()), backups
    assert set(backups) == {"edited.txt", "deleted.txt", "dir"}
    cli(dest, "apply", src, dest.url, *flags)
    runs = trash_runs(dest, tmp_path)
    assert len(runs) == 1
    (kept,) = runs.values()
    assert kept == {"edited.txt": b"version 1", "deleted.txt": b"deleted content", "dir/inner.txt": b"inner"}
    # the trash is neither mirrored nor deleted by later runs, even without the flag
    view = {k: v for k, v in remote_tree(dest, tmp_path).items() if not k.startswith(".trash")}
    assert view == local_view(src, dest)
    again = json.loads(cli(dest, "plan", src, dest.url, "--state-dir", state, "--delete", "--json").stdout)
    assert again["operations"] == []


def test_backup_keep_prunes_old_runs(dest, tmp_path):
    src, state = tmp_path / "src", tmp_path / "state"
    for i in range(3):
        write(src / f"f{i}", b"x", T0)
    cli(dest, "apply", src, dest.url, "--state-dir", state)
    r = open_remote(dest.url, dest.options)
    try:
        old = tmp_path / "old"
        write(old, b"ancient", T0)
        from reconcile.entry import Entry

        r.upload(str(old), ".trash/2001-01-01T000000Z/gone.txt", Entry("gone.txt", size=7, mtime_ns=T0))
        r.upload(str(old), ".trash/2999-01-01T000000Z/future.txt", Entry("future.txt", size=7, mtime_ns=T0))
    finally:
        r.close()
    doc = json.loads(cli(dest, "plan", src, dest.url, "--state-dir", state, "--backup-dir", ".trash",
                         "--backup-keep", "30", "--json").stdout)
    assert doc["operations"] == [{"op": "delete", "kind": "dir", "path": ".trash/2001-01-01T000000Z",
                                  "files": 1, "reason": "prune"}]
    cli(dest, "apply", src, dest.url, "--state-dir", state, "--backup-dir", ".trash", "--backup-keep", "30")
    assert set(trash_runs(dest, tmp_path)) == {"2999-01-01T000000Z"}


@pytest.mark.parametrize("seed", range(5))
def test_sigkill_with_backup_dir_loses_no_old_version(local_dest, tmp_path, seed):
    rng = random.Random(seed)
    dest = local_dest
    src, state = tmp_path / "src", tmp_path / "state"
    old = {f"f{i}": rng.randbytes(rng.randint(1, 400_000)) for i in range(40)}
    for name, data in old.items():
        write(src / name, data, T0)
    cli(dest, "apply", src, dest.url, "--state-dir", state)
    for i, name in enumerate(old):
        if i % 2:
            write(src / name, b"new " + old[name], T0 + 10**12)
        else:
            (src / name).unlink()
    args = [sys.executable, "-m", "reconcile", "apply", str(src), dest.url, "--state-dir", str(state),
            "--delete", "--max-delete", "100", "--backup-dir", ".trash", "-q"]
    # even seeds stop before a delete (a move into the trash), odd ones at a random operation
    point = f"op:{rng.randint(1, len(old))}" if seed % 2 else f"delete:{rng.randint(1, len(old) // 2)}"
    start_stalled(args, point, state, tmp_path / "stalled").kill()
    new = {name: (src / name).read_bytes() for name in old if (src / name).exists()}
    # straight after the kill: a real name holds its old or its new version, the trash only old ones
    files = read_dest(dest).files
    assert [p for p, v in files.items() if not p.startswith(".trash/") and v not in (old.get(p), new.get(p))] == []
    assert [p for p, v in files.items() if p.startswith(".trash/") and v != old[p.split("/", 2)[2]]] == []
    cli(dest, "apply", src, dest.url, "--state-dir", state, "--delete", "--max-delete", "100",
        "--backup-dir", ".trash")
    kept: dict[str, bytes] = {}
    for run in trash_runs(dest, tmp_path).values():
        kept.update(run)
    root = Path(dest.url)
    for name, data in old.items():
        on_remote = (root / name).read_bytes() if (root / name).exists() else None
        assert data in (kept.get(name), on_remote), f"old version of {name} lost"


def test_checksum_detects_same_size_same_mtime_change(dest, tmp_path):
    src, state = tmp_path / "src", tmp_path / "state"
    for i in range(4):
        write(src / f"f{i}", b"original", T0)
    cli(dest, "apply", src, dest.url, "--state-dir", state)
    write(src / "f1", b"ORIGINAL", T0)  # same size, same mtime: invisible to size+mtime
    assert json.loads(cli(dest, "plan", src, dest.url, "--state-dir", state, "--json").stdout)["operations"] == []
    doc = json.loads(cli(dest, "plan", src, dest.url, "--state-dir", state, "--checksum", "--json").stdout)
    assert doc["operations"] == [{"op": "upload", "path": "f1", "size": 8, "reason": "changed"}]
    cli(dest, "apply", src, dest.url, "--state-dir", state, "--checksum")
    assert remote_tree(dest, tmp_path)["f1"][1] == b"ORIGINAL"
    again = json.loads(cli(dest, "plan", src, dest.url, "--state-dir", state, "--checksum", "--json").stdout)
    assert again["operations"] == []


def test_links_skip_follow_store(dest, tmp_path):
    src, state = tmp_path / "src", tmp_path / "state"
    write(src / "real" / "file.txt", b"payload", T0)
    os.symlink("real/file.txt", src / "file-link")
    os.symlink("real", src / "dir-link")
    os.symlink("..", src / "real" / "loop")
    os.symlink("/etc", src / "outside")
    p = cli(dest, "apply", src, dest.url, "--state-dir", state)
    assert "4 symlinks skipped" in p.stderr
    assert {k for k in remote_tree(dest, tmp_path) if "link" in k or "loop" in k} == set()

    p = cli(dest, "apply", src, dest.url, "--state-dir", state, "--links", "follow")
    assert "a loop" in p.stderr and "outside the source" in p.stderr
    got = remote_tree(dest, tmp_path)
    assert got["file-link"][1] == b"payload" and got["dir-link/file.txt"][1] == b"payload"

    if dest.kind == "s3":  # S3 cannot hold links: refused, not silently skipped
        p = reconcile("plan", src, dest.url, "--state-dir", state, "--links", "store", *dest.cli_args,
                      env=dest.env, check=2)
        assert "--links store: S3 cannot hold symlinks" in p.stderr
        return
    store = tmp_path / "state2"
    r = open_remote(dest.url, dest.options)
    r.close()
    cli(dest, "apply", src, dest.url, "--state-dir", store, "--links", "store", "--delete", "--max-delete", "99")
    links = read_dest(dest).links
    assert links == {"file-link": "real/file.txt", "dir-link": "real", "real/loop": "..", "outside": "/etc"}
    os.unlink(src / "file-link")
    os.symlink("real", src / "file-link")  # a changed target is a change
    doc = json.loads(cli(dest, "plan", src, dest.url, "--state-dir", store, "--links", "store", "--json").stdout)
    assert [o["path"] for o in doc["operations"]] == ["file-link"]


def test_perms_are_kept(dest, tmp_path):
    src, state = tmp_path / "src", tmp_path / "state"
    write(src / "script.sh", b"#!/bin/sh\n", T0)
    os.chmod(src / "script.sh", 0o750)
    cli(dest, "apply", src, dest.url, "--state-dir", state, "--perms")
    assert read_dest(dest).mode["script.sh"] & 0o777 == 0o750  # the file's mode, or S3's "mode" metadata
    os.chmod(src / "script.sh", 0o700)
    doc = json.loads(cli(dest, "plan", src, dest.url, "--state-dir", state, "--perms", "--json").stdout)
    assert [o["path"] for o in doc["operations"]] == ["script.sh"]
    # a fresh state folder learns the mode from the remote itself (S3: a HEAD of its metadata)
    fresh = tmp_path / "fresh"
    cli(dest, "apply", src, dest.url, "--state-dir", fresh, "--perms")
    doc = json.loads(cli(dest, "plan", src, dest.url, "--state-dir", tmp_path / "fresh2", "--perms",
                         "--json").stdout)
    assert doc["operations"] == []
    os.chmod(src / "script.sh", 0o755)
    doc = json.loads(cli(dest, "plan", src, dest.url, "--state-dir", tmp_path / "fresh3", "--perms",
                         "--json").stdout)
    assert [o["path"] for o in doc["operations"]] == ["script.sh"]


def test_bandwidth_budget_is_shared_and_bounded():
    from reconcile.bwlimit import Bandwidth

    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    bw = Bandwidth(1000, clock=lambda: now[0], sleep=sleep)
    for _ in range(10):
        bw.consume(500)  # 5,000 bytes at 1,000/s: 5 s in all
    assert abs(now[0] - 5.0) < 1e-9
    now[0] += 100  # idle for long: at most one second of budget is saved up
    bw.consume(3000)
    assert abs(slept[-1] - 2.0) < 1e-9


def test_bandwidth_saves_no_budget_before_the_first_transfer():
    # the walk and the listing took 3 s before anything was sent: no burst at the limit's start
    from reconcile.bwlimit import Bandwidth

    now = [0.0]

    def sleep(s):
        now[0] += s

    bw = Bandwidth(1000, clock=lambda: now[0], sleep=sleep)
    now[0] += 3.0
    for _ in range(4):
        bw.consume(500)
    assert abs(now[0] - 5.0) < 1e-9  # 2,000 bytes at 1,000/s: 2 s after the first


def test_plan_shows_the_controls_in_force(tmp_path):
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src / "a.txt", b"new", T0)
    write(dst / "a.txt", b"old!", T0)
    flags = ["--state-dir", state, "--backup-dir", ".trash", "--backup-keep", "30", "--bwlimit", "1.5M",
             "--links", "follow", "--checksum", "--perms"]
    p = reconcile("plan", src, dst, *flags, check=0, env={"COLUMNS": "200"})
    assert "old version kept in" in p.stdout and ".trash/" in p.stdout.splitlines()[1]
    assert "bandwidth limit: 1.5M/s for all transfers together" in p.stdout
    assert "kept in .trash/, pruned after 30 days" in p.stdout
    assert "symlinks: follow" in p.stdout and "file permissions kept" in p.stdout
    doc = json.loads(reconcile("plan", src, dst, *flags, "--json", check=0).stdout)
    assert doc["controls"] == {"bwlimit": 1.5 * 1024**2, "backup_dir": ".trash", "backup_keep_days": 30.0,
                               "links": "follow", "checksum": True, "perms": True}
    assert doc["operations"][0]["backup"].startswith(".trash/")
    plain = reconcile("plan", src, dst, "--state-dir", state, check=0, env={"COLUMNS": "200"})
    assert "kept in" not in plain.stdout and "bandwidth" not in plain.stdout


def test_plan_table_shows_names_as_text_never_markup(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "[bold]z", b"new", T0)
    write(src / "[red]x[/red]", b"new", T0)
    p = reconcile("plan", src, dst, "--state-dir", tmp_path / "st", check=0, env={"COLUMNS": "200"})
    assert "[bold]z" in p.stdout and "[red]x[/red]" in p.stdout
