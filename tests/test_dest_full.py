"""A local destination whose disk fills up (ENOSPC; a real small tmpfs, the
tests run as root): the run stops at once with one line saying the disk is
full, keeps its journal, leaves no temp file, and the next run after space was
freed finishes the mirror. It used to retry each write for --retry-for (5
minutes by default) and end in 'the remote went away'."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.cli import reconcile

SIZE = 600_000  # two of these do not fit on a 1 MiB tmpfs


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_destination_disk_stops_the_run_at_once_and_the_next_run_finishes(small_disk, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(SIZE))
    (src / "b.bin").write_bytes(os.urandom(SIZE))
    (src / "note.txt").write_text("small")
    dest, state = small_disk / "backup", tmp_path / "state"

    # the default --retry-for (5m) is what a new user gets; the old code waited it out
    p = reconcile("apply", src, dest, "--state-dir", state, timeout=120)
    assert p.returncode == 3, p.stderr
    assert "the destination's disk is full" in p.stderr and "free space on it" in p.stderr, p.stderr
    assert "retrying" not in p.stderr and "went away" not in p.stderr, p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("partial:") and "stopped: the destination's disk is full" in last, last
    assert [n for n in os.listdir(dest) if n.startswith(".reconcile-tmp")] == []
    status = reconcile("status", src, dest, "--state-dir", state, "--json", check=0)
    assert json.loads(status.stdout)["pending_operations"] >= 1, status.stdout  # the run stopped: the rest waits

    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)
    reconcile("apply", src, dest, "--state-dir", state, check=0)
    for name in ("a.bin", "b.bin", "note.txt"):
        assert (dest / name).read_bytes() == (src / name).read_bytes()
