"""A killed run to a USB disk, and the next run with the disk away: finishing
the interrupted run comes before any listing, so it must meet the same
refusals as a plan (an unmounted disk, a destination missing more than its
last folder) instead of writing the rest of the run on the system disk.
Killed at a pause point (tests/kill.py), so the kill always lands mid-run."""

from __future__ import annotations

import os
import sys

from tests.cli import reconcile
from tests.kill import start_stalled
from tests.mirror import write

T0 = 1_600_000_000 * 10**9


def _killed_apply(src, dest, state, tmp_path) -> None:
    args = [sys.executable, "-m", "reconcile", "apply", str(src), str(dest), "--state-dir", str(state),
            "--transfers", "1", "-q"]
    start_stalled(args, "op:3", state, tmp_path / "stalled").kill()
    assert (state / "journal.msgpack").exists()


def _files(folder) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


def test_a_first_run_killed_then_the_disk_gone_makes_no_folders_on_the_system_disk(tmp_path):
    src, state, disk = tmp_path / "Pictures", tmp_path / "state", tmp_path / "media" / "USBDISK"
    for i in range(8):
        write(src / f"p{i}.jpg", b"photo %d" % i, T0)
    disk.mkdir(parents=True)
    _killed_apply(src, disk / "backup", state, tmp_path)
    away = tmp_path / "unplugged"
    os.rename(disk, away)  # udisks removes /media/me/USBDISK on unmount
    p = reconcile("apply", src, disk / "backup", "--state-dir", state, check=2)
    assert f"{disk} does not exist" in p.stderr, p.stderr
    assert not disk.exists()
    os.rename(away, disk)  # plugged in again: the interrupted run is finished there
    reconcile("apply", src, disk / "backup", "--state-dir", state, check=0)
    assert _files(disk / "backup") == _files(src)


def test_a_later_run_killed_then_the_disk_gone_is_the_unmounted_disk_refusal(tmp_path):
    src, state, disk = tmp_path / "Pictures", tmp_path / "state", tmp_path / "media" / "USBDISK"
    write(src / "first.jpg", b"first", T0)
    disk.mkdir(parents=True)
    reconcile("apply", src, disk / "backup", "--state-dir", state, check=0)  # the pair's record: 1 file
    for i in range(8):
        write(src / f"p{i}.jpg", b"photo %d" % i, T0)
    _killed_apply(src, disk / "backup", state, tmp_path)
    away = tmp_path / "unplugged"
    os.rename(disk, away)
    disk.mkdir()  # the bare mount-point folder left behind
    p = reconcile("apply", src, disk / "backup", "--state-dir", state, check=4)
    assert "is now missing or empty: is the disk mounted?" in p.stderr, p.stderr
    assert os.listdir(disk) == []
    os.rmdir(disk)
    os.rename(away, disk)
    reconcile("apply", src, disk / "backup", "--state-dir", state, check=0)
    assert _files(disk / "backup") == _files(src)
