"""A run that ends partial (an upload refused every time: a read-only folder
on the destination) still records a snapshot: the walk's rows where the
destination holds what was planned, the last snapshot's rows for what failed.
Renames are then found after it (they were not: a pair whose runs always
ended partial re-sent every renamed file), and a failed file is still
compared with the time the last complete run recorded, so a same-size edit
within the remote's time step is sent once the folder is writable again."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from reconcile import snapshot
from reconcile.entry import encode_path
from reconcile.statedir import StateDir
from tests.cli import reconcile
from tests.mirror import write

T0 = 1_600_000_000_000_000_000


@pytest.fixture
def read_only():
    """bind-mounts a destination folder over itself read-only (root only, as CI runs)"""
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root (CI runs as root)")
    mounted: list[Path] = []

    def lock(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
        mounted.append(folder)
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True)

    def unlock() -> None:
        while mounted:
            subprocess.run(["umount", str(mounted.pop())], check=True)

    lock.unlock = unlock
    yield lock
    unlock()


def _rows(src: Path, dest: str, state: Path) -> dict[bytes, tuple]:
    path = StateDir.for_pair(str(src), dest, str(state)).snapshot
    return {row[0]: row for row in snapshot.read_rows(path)}


def test_a_rename_after_a_partial_run_is_a_move(local_dest, read_only, tmp_path):
    src, state, dest = tmp_path / "src", tmp_path / "state", Path(local_dest.url)
    write(src / "photo.bin", os.urandom(50_000), T0)
    write(src / "locked" / "x", b"never fits", T0)
    read_only(dest / "locked")
    p = reconcile("apply", src, dest, "--state-dir", state, check=3)
    assert "upload locked/x" in p.stderr
    (src / "photo.bin").rename(src / "photo-2.bin")
    doc = json.loads(reconcile("plan", src, dest, "--state-dir", state, "--delete", "--json", check=0).stdout)
    assert {"op": "move", "kind": "file", "from": "photo.bin", "to": "photo-2.bin", "files": 1} in doc["operations"]
    reconcile("apply", src, dest, "--state-dir", state, "--delete", check=3)
    read_only.unlock()
    reconcile("apply", src, dest, "--state-dir", state, "--delete", check=0)
    assert (dest / "photo-2.bin").read_bytes() == (src / "photo-2.bin").read_bytes()
    assert (dest / "locked" / "x").read_bytes() == b"never fits"


def test_a_failed_file_keeps_its_last_row(local_dest, read_only, tmp_path):
    src, state, dest = tmp_path / "src", tmp_path / "state", Path(local_dest.url)
    write(src / "a.txt", b"a", T0)
    write(src / "locked" / "x", b"old", T0)
    reconcile("apply", src, dest, "--state-dir", state, check=0)
    before = _rows(src, local_dest.url, state)[encode_path("locked/x")]
    read_only(dest / "locked")
    write(src / "locked" / "x", b"new content", T0 + 10**12)
    write(src / "b.txt", b"b", T0)
    reconcile("apply", src, dest, "--state-dir", state, check=3)
    rows = _rows(src, local_dest.url, state)
    assert encode_path("b.txt") in rows  # the new snapshot was recorded
    assert rows[encode_path("locked/x")] == before  # but not for the file that failed
    read_only.unlock()
    reconcile("apply", src, dest, "--state-dir", state, check=0)
    assert (dest / "locked" / "x").read_bytes() == b"new content"


def test_a_same_step_edit_that_failed_is_sent_later(exfat_dest, read_only, tmp_path):
    """a real exFAT disk keeps coarse times: the same-size edit is seen only
    against the exact time the snapshot holds. Had the partial run recorded
    the edited file's new row, the next run would take it for sent."""
    src, state, dest = tmp_path / "src", tmp_path / "state", Path(exfat_dest.url)
    write(src / "a.txt", b"a", T0)
    write(src / "locked" / "x", b"version 1", T0)
    reconcile("apply", src, dest, "--state-dir", state, check=0)
    read_only(dest / "locked")
    write(src / "locked" / "x", b"version 2", T0 + 1_000_000)  # same size, same time step
    write(src / "b.txt", b"b", T0)
    p = reconcile("apply", src, dest, "--state-dir", state, check=3)
    assert "upload locked/x" in p.stderr
    assert encode_path("b.txt") in _rows(src, exfat_dest.url, state)
    read_only.unlock()
    reconcile("apply", src, dest, "--state-dir", state, check=0)
    assert (dest / "locked" / "x").read_bytes() == b"version 2"
