"""An SFTP server whose disk is a USB disk: a phone's exFAT card behind its
SFTP app, a NAS sharing an exFAT stick. The server does not say what its
disk keeps; a probe does (reconcile/remotes/sftp/probe.py), and the name
rules of a local USB disk (names.py) then hold over SFTP too: two names
differing only in case are a reported collision, never merged; names the
disk forbids are reported with the reason."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from reconcile.remotes.base import RemoteOptions, SftpOptions
from reconcile.remotes.fsprobe import PROBE_RECORD, SECOND
from reconcile.remotes.sftp import SftpRemote
from reconcile.remotes.sftp.probe import SERVER_DISK
from tests.cli import reconcile
from tests.mirror import write
from tests.servers_sftp import sftp_url

T0 = 1_600_000_001_523_456_789


@pytest.fixture
def on_exfat(sshd_server, exfat_disk, tmp_path):
    """(source, the disk's folder seen directly, its sftp:// URL, state, cli args)"""
    root = exfat_disk.fresh_folder()
    kh = sshd_server.write_known_hosts(tmp_path / "known_hosts")
    args = ["--ssh-key", sshd_server.user_key, "--known-hosts", kh, "--state-dir", tmp_path / "state"]
    return tmp_path / "src", root, sftp_url(sshd_server, root), args


def remote_for(sshd_server, root: Path, tmp_path: Path, state: Path) -> SftpRemote:
    kh = sshd_server.write_known_hosts(tmp_path / "kh")
    return SftpRemote.from_url(sftp_url(sshd_server, root),
                               RemoteOptions(sftp=SftpOptions(key=sshd_server.user_key, known_hosts=kh), state_dir=str(state)))


def test_probe_over_sftp_finds_what_the_exfat_disk_keeps_and_records_it(sshd_server, exfat_disk, tmp_path):
    state = tmp_path / "rstate"
    state.mkdir()
    r = remote_for(sshd_server, exfat_disk.fresh_folder(), tmp_path, state)
    try:
        caps = r.capabilities
    finally:
        r.close()
    assert (caps.case_insensitive, caps.windows_names, caps.symlinks) == (True, True, False)
    assert caps.mtime_precision_ns == SECOND and caps.fs_type == SERVER_DISK
    assert caps.mtime_range is not None  # exFAT holds 1980 to 2107
    record = state / PROBE_RECORD
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert json.loads(record.read_text())["facts"]["case_insensitive"] is True
    assert not [n for n in os.listdir(exfat_disk.mount) if "probe" in n]  # the probe files are gone


def test_probe_over_sftp_on_this_machines_disk_changes_nothing(sshd_server, tmp_path):
    root = tmp_path / "root" / "not" / "yet"  # probed in its nearest existing parent
    (tmp_path / "root").mkdir()
    r = remote_for(sshd_server, root, tmp_path, tmp_path)
    try:
        caps = r.capabilities
    finally:
        r.close()
    assert (caps.case_insensitive, caps.windows_names, caps.symlinks) == (False, False, True)
    assert caps.fs_type == "" and caps.mtime_range is None
    assert os.listdir(tmp_path / "root") == []


def test_two_names_one_on_the_servers_disk_are_a_collision_never_merged(on_exfat):
    src, disk, url, args = on_exfat
    write(src / "docs2" / "x", b"lower x", T0)
    write(src / "DOCS2" / "y", b"upper y", T0)
    write(src / "other.txt", b"other", T0)
    p = reconcile("apply", src, url, *args, "--delete", check=3)
    assert p.stderr.count("differ only in case") == 1, p.stderr
    assert f"({SERVER_DISK})" in p.stderr
    assert sorted(os.listdir(disk)) == ["DOCS2", "other.txt"] and os.listdir(disk / "DOCS2") == ["y"]
    again = reconcile("apply", src, url, *args, "--delete", check=3)  # and every run: nothing of y deleted
    assert "differ only in case" in again.stderr
    assert sorted(os.listdir(disk)) == ["DOCS2", "other.txt"] and os.listdir(disk / "DOCS2") == ["y"]


def test_case_only_renames_reach_the_servers_disk(on_exfat):
    src, disk, url, args = on_exfat
    write(src / "Readme.md", b"read me", T0)
    write(src / "photos" / "a.jpg", b"jpg", T0)
    reconcile("apply", src, url, *args, "--delete", check=0)
    os.rename(src / "Readme.md", src / "README.md")
    os.rename(src / "photos", src / "Photos")
    reconcile("apply", src, url, *args, "--delete", check=0)
    assert sorted(os.listdir(disk)) == ["Photos", "README.md"]
    assert os.listdir(disk / "Photos") == ["a.jpg"]
    plan = json.loads(reconcile("plan", src, url, *args, "--delete", "--json", check=0).stdout)
    assert plan["operations"] == []


def test_a_name_the_servers_disk_forbids_is_reported_with_its_reason(on_exfat):
    src, disk, url, args = on_exfat
    write(src / "Docs" / "a:b.txt", b"colon", T0)
    write(src / "Docs" / "fine.txt", b"fine", T0)
    # --name-encoding maps names on local disks only: over SFTP it is not offered as the way out
    p = reconcile("apply", src, url, *args, "--name-encoding", check=3)
    assert (f"cannot store Docs/a:b.txt on this destination ({SERVER_DISK}): ':' is not allowed in names; "
            "rename it") in p.stderr, p.stderr
    assert "--name-encoding" not in p.stderr
    assert os.listdir(disk / "Docs") == ["fine.txt"]
