"""The tidy-up of a local destination's temp files meets a temp-named folder
holding a tree about a thousand folders deep (anyone who can write the
destination can make one): shutil.rmtree recursed until a RecursionError, and
every run that wrote ended 'internal error', exit 1, though its files were
sent. Now that folder is left as it is and the run ends well."""

from __future__ import annotations

import os
import subprocess

from reconcile.entry import TEMP_MARK
from tests.cli import reconcile
from tests.mirror import write

DEPTH = 1_100  # past Python's recursion limit (1,000)


def _deep(top) -> None:
    os.mkdir(top)
    fd = os.open(top, os.O_RDONLY)
    try:
        for _ in range(DEPTH):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)


def test_a_deep_tree_in_a_temp_named_folder_does_not_fail_the_run(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    write(src / "a.txt", b"a", 1_600_000_000 * 10**9)
    dest.mkdir()
    planted = dest / f"{TEMP_MARK}planted"
    _deep(planted)
    try:
        p = reconcile("apply", src, dest, "--state-dir", tmp_path / "state", check=0)
        assert "internal error" not in p.stderr, p.stderr
        assert (dest / "a.txt").read_bytes() == b"a"
    finally:
        # pytest's own clean-up of old tmp folders recurses as well: removed here
        subprocess.run(["rm", "-rf", str(planted)], check=True)
