"""USB-disk destinations on real file systems (exFAT and NTFS images through
FUSE, tests/servers_usb.py) and on the machine's own disk: what the probe
finds, and a run after a run changes nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from reconcile.diff import file_changed, same_mtime
from reconcile.entry import FILE, Entry
from reconcile.remotes.local import LocalRemote
from tests.mirror import run, tree, write

SECOND = 10**9
T0 = 1_600_000_001_523_456_789  # an odd second and odd nanoseconds: kept only by a 1 ns file system

# what each file system keeps, as measured on these mounts (docs/design-notes.md)
EXPECTED = {
    "exfat": {"mtime_precision_ns": SECOND, "case_insensitive": True, "fs_type": "exfat"},
    "ntfs": {"mtime_precision_ns": 100, "case_insensitive": False, "fs_type": "ntfs"},
}


@pytest.fixture(params=["local", "exfat", "ntfs"])
def disk_dest(request, tmp_path):
    """a fresh folder on this machine's disk, on exFAT, on NTFS."""
    if request.param == "local":
        root = tmp_path / "dest"
        root.mkdir()
        return request.param, root
    disk = request.getfixturevalue(f"{request.param}_disk")
    return request.param, disk.fresh_folder()


def make_tree(src: Path, n: int = 12) -> None:
    for i in range(n):
        write(src / f"d{i % 3}" / f"f{i}.bin", os.urandom(100 + i), T0 + i * 1_000_000_123)
    write(src / "top.txt", b"top", T0)


def near(a: dict, b: dict, precision: int) -> bool:
    """two trees alike, mtimes within the destination's precision"""
    if a.keys() != b.keys():
        return False
    for k, v in a.items():
        w = b[k]
        if v[:2] != w[:2] or (v[0] == "f" and abs(v[2] - w[2]) >= precision):
            return False
    return True


@pytest.mark.parametrize("fs", ["exfat", "ntfs"])
def test_probe_finds_what_the_disk_keeps_and_records_it(fs, request, tmp_path):
    folder = request.getfixturevalue(f"{fs}_disk").fresh_folder()
    state = tmp_path / "rstate"
    state.mkdir()
    from reconcile.remotes.base import RemoteOptions

    caps = LocalRemote(str(folder), RemoteOptions(state_dir=str(state))).capabilities
    for name, want in EXPECTED[fs].items():
        assert getattr(caps, name) == want, name
    assert caps.windows_names
    record = json.loads((state / "dest-probe.json").read_text())
    assert record["facts"]["mtime_precision_ns"] == EXPECTED[fs]["mtime_precision_ns"]
    assert (state / "dest-probe.json").stat().st_mode & 0o777 == 0o600
    assert os.listdir(folder) == []  # the probe files are gone


def test_probe_on_this_machines_disk_keeps_nanoseconds(tmp_path):
    caps = LocalRemote(str(tmp_path)).capabilities
    assert caps.mtime_precision_ns == 1 and not caps.case_insensitive and not caps.windows_names


def test_probe_of_a_folder_still_to_be_made_looks_at_its_parent(exfat_disk):
    caps = LocalRemote(str(exfat_disk.fresh_folder() / "not" / "yet")).capabilities
    assert caps.mtime_precision_ns == SECOND and caps.fs_type == "exfat"


def test_no_change_plan_after_apply_is_empty(disk_dest, tmp_path):
    kind, dst = disk_dest
    src, state = tmp_path / "src", tmp_path / "state"
    make_tree(src)
    first = run(src, str(dst), state)
    assert first.outcome.complete and first.outcome.count("done") == 13
    again = run(src, str(dst), state, mode="plan")
    assert again.plan.ops == [], [o.to_json() for o in again.plan.ops]
    second = run(src, str(dst), state)
    assert second.plan.ops == []
    precision = EXPECTED.get(kind, {}).get("mtime_precision_ns", 1)
    assert near(tree(dst), tree(src), precision)


@pytest.mark.parametrize("fs", ["exfat", "ntfs"])
def test_no_change_plan_after_remount(fs, request, tmp_path):
    """what the disk keeps after a remount, not what FUSE held in memory"""
    disk = request.getfixturevalue(f"{fs}_disk")
    dst = disk.fresh_folder()
    src, state = tmp_path / "src", tmp_path / "state"
    make_tree(src)
    assert run(src, str(dst), state).outcome.complete
    disk.remount()
    again = run(src, str(dst), state, mode="plan")
    assert again.plan.ops == [], [o.to_json() for o in again.plan.ops]


def test_a_real_change_within_the_same_second_is_still_sent_on_ntfs(ntfs_disk, tmp_path):
    dst = ntfs_disk.fresh_folder()
    src, state = tmp_path / "src", tmp_path / "state"
    write(src / "f", b"one", T0)
    run(src, str(dst), state)
    write(src / "f", b"two", T0 + 1000)  # same size, 1 us later: NTFS keeps 100 ns
    again = run(src, str(dst), state)
    assert [o.path for o in again.plan.ops] == ["f"]
    assert (dst / "f").read_bytes() == b"two"


def test_fat_rounds_either_way_within_two_seconds():
    """FAT keeps 2 s and may round up: 41.5 s reads back as 42 s, or as 40 s"""
    two = 2 * SECOND
    src = Entry("f", FILE, 1, 41 * SECOND + SECOND // 2)
    for stored in (40 * SECOND, 42 * SECOND):
        assert not file_changed(Entry("f", FILE, 1, stored), src, two)
    assert file_changed(Entry("f", FILE, 1, 44 * SECOND), src, two)
    assert same_mtime(5, 5, 1) and not same_mtime(5, 6, 1)


def test_times_exfat_cannot_hold_are_stored_clamped_reported_once_and_not_resent(exfat_disk, tmp_path):
    dst = exfat_disk.fresh_folder()
    src, state = tmp_path / "src", tmp_path / "state"
    old, future = 157_766_400 * SECOND, 7_258_118_400 * SECOND  # 1975-01-01, 2200-01-01
    write(src / "old.txt", b"old", old)
    write(src / "future.txt", b"future", future)
    write(src / "now.txt", b"now", T0)
    first = run(src, str(dst), state)
    assert first.outcome.complete and first.outcome.count("done") == 3
    clamped = [w for w in first.warnings if "outside what exfat can hold" in w]
    assert len(clamped) == 2 and any(w.startswith("old.txt: its time 1975-01-01") for w in clamped), clamped
    exfat_disk.remount()
    got = {p.name: p.stat().st_mtime_ns for p in dst.iterdir()}
    assert 315_532_800 * SECOND <= got["old.txt"] <= 315_532_800 * SECOND + 86_400 * SECOND
    assert 4_300_000_000 * SECOND < got["future.txt"] <= 4_354_819_198 * SECOND  # not wrapped round
    again = run(src, str(dst), state)
    assert again.plan.ops == [] and not [w for w in again.warnings if "outside" in w]


@pytest.mark.parametrize("fs", ["exfat", "ntfs"])
def test_a_same_size_edit_one_step_older_is_still_sent(fs, request, tmp_path):
    """a restored older version of the same size: exFAT and NTFS truncate, so a
    time one step older falls in another step and is seen"""
    dst = request.getfixturevalue(f"{fs}_disk").fresh_folder()
    src, state = tmp_path / "src", tmp_path / "state"
    step = EXPECTED[fs]["mtime_precision_ns"]
    write(src / "f", b"new", T0)
    run(src, str(dst), state)
    write(src / "f", b"old", T0 - step)
    again = run(src, str(dst), state)
    assert [o.path for o in again.plan.ops] == ["f"]
    assert (dst / "f").read_bytes() == b"old"
