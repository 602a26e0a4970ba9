"""An SFTP server whose disk fills up (the destination folder on a real small
tmpfs; the tests run as root and sshd writes there): the run stops at once
saying the destination's disk is full, leaves no temp file holding bytes, and
the next run after space was freed finishes the mirror and clears the rest. OpenSSH answers a write
on a full disk with a plain "Failure"; each was retried for --retry-for, and
each try left a new temp file on the full disk."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from reconcile.errors import DestinationFull
from tests.cli import reconcile
from tests.mirror import run
from tests.mounts import read_only_bind

SIZE = 600_000  # two of these do not fit on a 1 MiB tmpfs


@pytest.fixture
def small_sftp_root(sftp_dest):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    root = Path(unquote(urlsplit(sftp_dest.url).path))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root)], check=True)
    yield root
    subprocess.run(["umount", "-l", str(root)], check=False)


def test_a_full_disk_on_the_sftp_server_stops_the_run_at_once(sftp_dest, small_sftp_root, tmp_path):
    src, state = tmp_path / "src", tmp_path / "state"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(SIZE))
    (src / "b.bin").write_bytes(os.urandom(SIZE))
    (src / "note.txt").write_text("small")

    p = reconcile("apply", src, sftp_dest.url, "--state-dir", state, "--retry-for", "1m", *sftp_dest.cli_args,
                  timeout=120)
    assert p.returncode == 3, p.stderr
    assert "the destination's disk is full" in p.stderr, p.stderr
    assert "retrying" not in p.stderr and "connection lost" not in p.stderr, p.stderr
    # temp files of the tries may be left (the run's own listing did not see them), but empty:
    # they hold none of the space the next run needs, and that run clears them
    left = {n: os.path.getsize(small_sftp_root / n) for n in os.listdir(small_sftp_root)}
    assert all(os.path.getsize(small_sftp_root / n) == 0 for n in os.listdir(small_sftp_root)
               if n.startswith(".reconcile-tmp")), str(sorted(left.items()))

    subprocess.run(["mount", "-o", "remount,size=4m", str(small_sftp_root)], check=True)
    reconcile("apply", src, sftp_dest.url, "--state-dir", state, *sftp_dest.cli_args, check=0)
    for name in ("a.bin", "b.bin", "note.txt"):
        assert (small_sftp_root / name).read_bytes() == (src / name).read_bytes()
    assert [n for n in os.listdir(small_sftp_root) if n.startswith(".reconcile-tmp")] == []


def test_a_full_disk_on_a_server_without_statvfs_stops_the_run_at_once(sftp_dest, small_sftp_root, tmp_path):
    """the client asks no statvfs@openssh.com (as against a server without it): the
    write's bare Failure on a session that still answers is not a lost connection.
    It used to be retried for --retry-for (here 1m), then end as one."""
    src, state = tmp_path / "src", tmp_path / "state"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(SIZE))
    (src / "b.bin").write_bytes(os.urandom(SIZE))
    options = dataclasses.replace(sftp_dest.options, extra={"sftp_statvfs": False}, retry_for=60.0)
    result = run(src, sftp_dest.url, state, options=options)
    gone = result.outcome.remote_gone
    assert gone is not None and gone.startswith(DestinationFull.WHY), gone
    assert "bare Failure" in gone and "cannot say how much space is free" in gone, gone
    assert all(os.path.getsize(small_sftp_root / n) == 0 for n in os.listdir(small_sftp_root)
               if n.startswith(".reconcile-tmp"))

    subprocess.run(["mount", "-o", "remount,size=4m", str(small_sftp_root)], check=True)
    reconcile("apply", src, sftp_dest.url, "--state-dir", state, *sftp_dest.cli_args, check=0)
    for name in ("a.bin", "b.bin"):
        assert (small_sftp_root / name).read_bytes() == (src / name).read_bytes()


@pytest.fixture
def read_only_sftp_root(sftp_dest):
    root = Path(unquote(urlsplit(sftp_dest.url).path))
    root.mkdir(parents=True, exist_ok=True)
    (root / "kept.txt").write_text("already there")
    with read_only_bind(root):
        yield root


@pytest.mark.parametrize("statvfs", [True, False])
def test_a_read_only_disk_on_the_sftp_server_stops_the_run_at_once(sftp_dest, read_only_sftp_root, tmp_path,
                                                                   statvfs):
    """OpenSSH answers the temp file's OPEN on a read-only disk with a bare
    Failure on a session that still answers: it was retried for --retry-for
    (5 minutes by default), then reported as "the remote went away"."""
    src, state = tmp_path / "src", tmp_path / "state"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}.txt").write_text("small %d" % i)
    (src / "kept.txt").write_text("already there")
    options = dataclasses.replace(sftp_dest.options, extra={"sftp_statvfs": statvfs}, retry_for=60.0)
    result = run(src, sftp_dest.url, state, options=options)
    gone = result.outcome.remote_gone
    assert gone is not None and "connection lost" not in gone, gone
    if statvfs:
        assert gone.startswith("the destination's disk is mounted read-only on the server"), gone
    else:
        assert gone.startswith(DestinationFull.WHY) and "bare Failure" in gone, gone

    subprocess.run(["mount", "-o", "remount,bind,rw", str(read_only_sftp_root)], check=True)
    reconcile("apply", src, sftp_dest.url, "--state-dir", state, *sftp_dest.cli_args, check=0)
    for i in range(3):
        assert (read_only_sftp_root / f"f{i}.txt").read_text() == "small %d" % i
