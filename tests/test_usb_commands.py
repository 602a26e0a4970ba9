"""verify, restore and status against real exFAT and NTFS disks
(tests/servers_usb.py), through the real command line, on a tree with
nanosecond times and (on exFAT) a time before 1980."""

from __future__ import annotations

import json
import os

import pytest

from tests.cli import reconcile
from tests.mirror import tree, write

SECOND = 10**9
T0 = 1_600_000_001_523_456_789
OLD = 157_766_400 * SECOND  # 1975: before what exFAT holds
PRECISION = {"exfat": SECOND, "ntfs": 100}


@pytest.mark.parametrize("fs", ["exfat", "ntfs"])
def test_verify_restore_status_on_usb_disks(fs, request, tmp_path):
    disk = request.getfixturevalue(f"{fs}_disk")
    dst, src, state, out = disk.fresh_folder(), tmp_path / "src", tmp_path / "state", tmp_path / "out"
    for i in range(6):
        write(src / f"d{i % 2}" / f"f{i}.txt", os.urandom(50 + i), T0 + i * 1_000_000_007)
    write(src / "old.txt", b"from 1975", OLD)
    reconcile("apply", src, dst, "--state-dir", state, check=0)
    disk.remount()

    v = reconcile("verify", src, dst, "--state-dir", state, "--json", check=0)
    assert json.loads(v.stdout)["differences"] == []
    assert reconcile("verify", src, dst, "--state-dir", state, "--hash", check=0)

    s = reconcile("status", src, dst, "--state-dir", state, "--json", check=0)
    assert json.loads(s.stdout)["last_run"]["result"] == "ok"

    reconcile("restore", dst, out, check=0)
    got, want = tree(out), tree(src)
    assert got.keys() == want.keys()
    for path, v in want.items():
        if v[0] == "f":
            assert got[path][1] == v[1], path
            if path != "old.txt":
                assert abs(got[path][2] - v[2]) < PRECISION[fs], path
    assert reconcile("restore", dst, out, "--json", check=0)  # a second restore has nothing to do
