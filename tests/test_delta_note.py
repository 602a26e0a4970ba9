"""plan -v and apply -v say how a large file that changed travels to the
destination (issue 26): only its changed blocks, or whole and why (a local
folder on a file system without reflinks: ext4 here)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.cli import reconcile
from tests.mirror import write

LINE = "large files (64 MiB or more) that change: "


def local_expected(dest) -> str:
    """ext4 here; a machine whose temp folder has reflinks gets deltas"""
    from reconcile.remotes import open_remote
    from reconcile.remotes.local import CHEAP_COPY_FS

    fs = open_remote(dest.url, dest.options).capabilities.fs_type
    if fs in CHEAP_COPY_FS:
        return "only their changed blocks are written"
    return f"copied whole ({fs} has no reflink: a delta would write as much as a full copy"


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_verbose_says_how_large_changed_files_travel(dest, tmp_path, command):
    src = tmp_path / "src"
    write(src / "a.txt", b"a", 1_600_000_000 * 10**9)
    p = reconcile(command, src, dest.url, "--state-dir", tmp_path / "state", "-v", *dest.cli_args, env=dest.env)
    said = [line[len(LINE):] for line in p.stderr.splitlines() if line.startswith(LINE)]
    expected = {"local": local_expected(dest),
                "sftp": "only their changed blocks are sent, the rest copied on the server with copy-data",
                "s3": "only their changed blocks are sent, the rest copied from the old object (UploadPartCopy)"}
    assert len(said) == 1 and said[0].startswith(expected[dest.kind]), p.stderr


def test_a_folder_where_deltas_pay_says_so(local_dest, tmp_path):
    """(the tests' switch stands for a file system with reflinks)"""
    dest = replace(local_dest, env={**local_dest.env, "RECONCILE_TEST_LOCAL_DELTA": "1"})
    src = tmp_path / "src"
    write(src / "a.txt", b"a", 1_600_000_000 * 10**9)
    p = reconcile("plan", src, dest.url, "--state-dir", tmp_path / "state", "-v", env=dest.env)
    assert f"{LINE}only their changed blocks are written, the rest shared or copied by" in p.stderr
