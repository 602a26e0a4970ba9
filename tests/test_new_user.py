"""Issue 18: what a new user hit in the first hour, each driven through the
real command line as a user would, checking the exit code and the words that
tell the user what to do next. Permission rows run reconcile as nobody
(setpriv): tests run as root, and root reads everything.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.cli import reconcile
from tests.mirror import tree, write

T0 = 1_600_000_000_000_000_000
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def as_nobody(*args, cwd=None) -> subprocess.CompletedProcess:
    """the real command line as user nobody (uid 65534)."""
    p = subprocess.run([*NOBODY, sys.executable, "-m", "reconcile", *map(str, args)], capture_output=True,
                       text=True, cwd=cwd or "/", env={**os.environ, "HOME": "/nonexistent"})
    assert "Traceback" not in p.stderr, p.stderr
    return p


@pytest.fixture
def open_tmp():
    """a temp dir nobody may enter (pytest's tmp_path is closed to nobody)."""
    d = Path(tempfile.mkdtemp(prefix="reconcile-user18-"))
    os.chmod(d, 0o777)
    yield d
    for root, dirs, files in os.walk(d):
        for n in dirs:
            os.chmod(os.path.join(root, n), 0o700)
    shutil.rmtree(d)


def _give_to_nobody(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        os.chown(dirpath, 65534, 65534)
        for n in files:
            os.chown(os.path.join(dirpath, n), 65534, 65534)


# --- 1. an unreadable source file or folder is never a success -------------------

@pytest.mark.parametrize("what", ["file", "folder"])
def test_unreadable_source_is_counted_skipped_and_exits_3(open_tmp, what):
    src, dst, state = open_tmp / "src", open_tmp / "dst", open_tmp / "state"
    write(src / "open.txt", b"1", T0)
    write(src / "photo 90.jpg", b"jpeg", T0)
    write(src / "album" / "a.jpg", b"a", T0)
    _give_to_nobody(open_tmp)
    locked = src / ("photo 90.jpg" if what == "file" else "album")
    os.chmod(locked, 0o000)
    p = as_nobody("apply", src, dst, "--state-dir", state, "--json")
    assert p.returncode == 3, p.stderr
    summary = p.stderr.strip().splitlines()[-1]
    shown = "photo 90.jpg" if what == "file" else "album/"
    assert summary.startswith("partial: "), summary
    assert "1 skipped" in summary and f"could not be read: {shown} (Permission denied)" in summary
    assert "fix their permissions" in summary
    doc = json.loads(p.stdout)
    assert doc["unreadable"] == [{"path": shown, "reason": "Permission denied"}]
    assert doc["totals"]["skipped"] == 1
    assert (dst / "open.txt").read_bytes() == b"1"
    # status and the next run agree: still partial until the permissions are fixed
    st = json.loads(as_nobody("status", src, dst, "--state-dir", state, "--json").stdout)
    assert st["last_run"]["result"] == "partial"
    os.chmod(locked, 0o755 if what == "folder" else 0o644)
    p = as_nobody("apply", src, dst, "--state-dir", state)
    assert p.returncode == 0, p.stderr
    assert tree(dst) == tree(src)


def test_a_file_gone_between_walk_and_upload_is_not_an_error(tmp_path):
    from reconcile.engine import Run, RunOptions
    from tests.mirror import SilentReporter

    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src / "stays.txt", b"1", T0)
    write(src / "goes.txt", b"2", T0)
    r = Run(str(src), str(dst), RunOptions(state_dir=str(state)), SilentReporter())
    original = r._execute

    def execute(plan, tag):
        os.unlink(src / "goes.txt")
        return original(plan, tag)

    r._execute = execute
    from reconcile.engine import exit_word

    result = r.apply()
    r.close()
    assert exit_word(result) == "ok" and result.unreadable == []
    # and through the command line: a file gone before the hash is read is no error either
    write(src / "again.txt", b"3", T0)
    p = reconcile("apply", src, dst, "--state-dir", state, check=0)
    assert "could not be read" not in p.stderr


# --- 2. a destination typo never writes into ./sftp/... ------------------------------

@pytest.mark.parametrize("typed, likely", [
    ("sftp//nas/backup/Pictures", "sftp://nas/backup/Pictures"),
    ("s3//bucket", "s3://bucket"),
    ("file//mnt/usb/backup", "file:///mnt/usb/backup"),
    ("ssh//me@nas/backup", "sftp://me@nas/backup"),
    ("scp//nas/x", "sftp://nas/x"),
    ("SFTP/nas/x", "sftp://nas/x"),
])
@pytest.mark.parametrize("command", ["apply", "plan"])
def test_url_without_colon_is_refused_with_the_likely_url(tmp_path, typed, likely, command):
    src = tmp_path / "Pictures"
    write(src / "a.jpg", b"a", T0)
    p = reconcile(command, src, typed, cwd=tmp_path, env={"XDG_STATE_HOME": str(tmp_path / "state")})
    assert p.returncode == 2, p.stderr
    assert f"did you mean {likely}?" in p.stderr
    assert sorted(os.listdir(tmp_path)) == ["Pictures"]  # no ./sftp, no state written


def test_a_folder_named_like_a_scheme_is_still_reachable(tmp_path):
    src = tmp_path / "Pictures"
    write(src / "a.jpg", b"a", T0)
    reconcile("apply", src, "./sftp/copy", cwd=tmp_path, env={"XDG_STATE_HOME": str(tmp_path / "st")}, check=0)
    assert (tmp_path / "sftp" / "copy" / "a.jpg").read_bytes() == b"a"
