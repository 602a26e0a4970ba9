"""One pair, one state folder and one lock, however SOURCE and DEST are
spelled; a mistyped URL is refused instead of becoming a local folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from reconcile.statedir import StateDir, pair_id
from tests.cli import reconcile
from tests.mirror import wait_until_locked, write

T0 = 1_600_000_000_000_000_000


def test_every_spelling_of_a_pair_has_one_id(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    os.symlink(tmp_path / "src", tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    dst = str(tmp_path / "dst")
    ids = {pair_id(s, d) for s in ("src", "src/", str(tmp_path / "src"), "link")
           for d in ("dst", "dst/", "./dst", dst, "file://" + dst, "file://localhost" + dst)}
    assert len(ids) == 1
    assert len({pair_id("src", u) for u in ("s3://b/p", "s3://b/p/", "S3://b/p")}) == 1
    assert pair_id("src", "s3://b/p") != pair_id("src", "s3://b/q")
    assert "pw" not in pair_id("src", "sftp://me:pw@host/x")


def test_another_spelling_cannot_run_beside_a_running_apply(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    write(tmp_path / "src" / "big", os.urandom(2_000_000), T0)
    slow = subprocess.Popen([sys.executable, "-m", "reconcile", "apply", "src", str(tmp_path / "dst"),
                             "--bwlimit", "200K", "-q"], stderr=subprocess.PIPE)
    try:
        wait_until_locked(StateDir.for_pair("src", str(tmp_path / "dst")).path)
        p = reconcile("apply", "src/", "dst/", check=5)
        assert f"another reconcile run (pid {slow.pid})" in p.stderr
    finally:
        slow.send_signal(signal.SIGKILL)
        slow.wait()


@pytest.mark.parametrize("dest", ["s3:/family-photos", "sftp:nas/backup", "me@nas:/backup", "C:/backup"])
def test_a_mistyped_url_is_refused_not_made_a_folder(tmp_path, dest, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "src" / "a.txt", b"a", T0)
    p = reconcile("apply", "src", dest, "--state-dir", "state", check=2)
    assert "is neither a folder nor a URL" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert sorted(os.listdir(tmp_path)) == ["src"]  # nothing made, not even a state folder


def test_a_colon_in_a_local_name_is_fine_when_written_as_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "src" / "a.txt", b"a", T0)
    reconcile("apply", "src", "./odd:name", "--state-dir", "state", check=0)
    assert (tmp_path / "odd:name" / "a.txt").read_bytes() == b"a"


def test_bad_port_with_a_password_is_a_config_error(tmp_path):
    (tmp_path / "src").mkdir()
    write(tmp_path / "src" / "a", b"a", T0)
    p = reconcile("plan", tmp_path / "src", "sftp://u:secret@host:abc/x", check=2)
    assert "secret" not in p.stderr and "internal error" not in p.stderr
