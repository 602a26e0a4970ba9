"""A local destination whose file system shares blocks (XFS with reflink,
kernel-mounted from an image) gets deltas of large files with no test
switch: the file system is recognised, the unchanged blocks are shared with
the old copy instead of written again, and the result is byte-exact.

tests/test_delta.py forces deltas on ext4 (RECONCILE_TEST_LOCAL_DELTA=1) to
test the mechanics; this file checks the choice itself on a real file system
that makes a delta cheap."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
from pathlib import Path

from tests.cli import reconcile
from tests.mirror import write

MiB = 1 << 20
BLOCK = 8 * MiB
SIZE = 80 * MiB
T0 = 1_600_000_000 * 10**9


def apply(src: Path, dest: Path, state: Path) -> dict:
    assert "RECONCILE_TEST_LOCAL_DELTA" not in os.environ
    p = reconcile("apply", src, dest, "--state-dir", state, "--json", check=0)
    return json.loads(p.stdout)["totals"]


def shared_bytes(path: Path) -> int:
    """bytes of path whose extents the file system reports as shared with another file"""
    out = subprocess.run(["filefrag", "-v", "-b4096", str(path)], capture_output=True, text=True, check=True).stdout
    total = 0
    for line in out.splitlines():
        m = re.match(r"\s*\d+:\s+\d+\.\.\s*\d+:\s+\d+\.\.\s*\d+:\s+(\d+):.*", line)
        if m and "shared" in line:
            total += int(m.group(1)) * 4096
    return total


def test_a_reflink_file_system_gets_a_delta_whose_old_blocks_are_shared(xfs_disk, tmp_path):
    src, state = tmp_path / "src", tmp_path / "state"
    dest = xfs_disk.fresh_folder()
    data = bytearray(random.randbytes(SIZE))
    write(src / "disk.img", bytes(data), T0)
    first = apply(src, dest, state)
    assert first["bytes_sent"] == SIZE and first["bytes_saved"]["delta"] == 0

    # a second name for the old copy, outside the mirrored folder, so that
    # after the run its blocks can be seen shared with the new file
    keep = dest.parent / f"{dest.name}-old-copy"
    os.link(dest / "disk.img", keep)
    middle = SIZE // 2 - MiB // 2  # 1 MiB across the boundary of blocks 4 and 5
    data[middle:middle + MiB] = random.randbytes(MiB)
    write(src / "disk.img", bytes(data), T0 + 10**9)

    second = apply(src, dest, state)
    assert second["bytes_sent"] == 2 * BLOCK and second["bytes_saved"]["delta"] == SIZE - 2 * BLOCK
    assert (dest / "disk.img").read_bytes() == data
    assert keep.read_bytes() != data  # the old copy was not written into
    assert shared_bytes(dest / "disk.img") >= SIZE - 2 * BLOCK
    keep.unlink()
