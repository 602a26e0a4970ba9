"""Windows and macOS behaviour by design, tested as logic on Linux (issue 23
items 2 and 3): drive letters, UNC shares and file:// URLs; long paths;
locked files; where state and config live; a legacy console code page;
Ctrl-Break; NFD names from macOS."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest

from reconcile import config, portable, statedir, winpath
from reconcile.errors import ConfigError
from reconcile.remotes import dest_kind, local_path
from tests.cli import reconcile
from tests.mirror import tree, write

T0 = 1_600_000_000_000_000_000


@pytest.mark.parametrize("url", [r"C:\Users\me\Pictures", "C:/backup", "d:", r"\\nas\share\backup",
                                 "//nas/share/backup", "file:///C:/Users/me", "file://nas/share/backup"])
def test_windows_destinations_are_local_folders(url):
    assert dest_kind(url, windows=True) == "local"


def test_a_drive_letter_elsewhere_is_refused_not_taken_for_a_folder():
    with pytest.raises(ConfigError, match="neither a folder nor a URL"):
        dest_kind(r"C:\Users\me", windows=False)


@pytest.mark.parametrize("url, path", [
    ("file:///C:/Users/me%20too/Pictures", r"C:\Users\me too\Pictures"),
    ("file://localhost/C:/backup/", "C:\\backup"),
    ("file:///D:", "D:"),
    ("file://nas/share/backup", r"\\nas\share\backup"),
    ("file:////nas/share/backup", r"\\nas\share\backup"),
])
def test_file_urls_on_windows(url, path):
    assert local_path(url, windows=True) == path


def test_file_urls_elsewhere():
    assert local_path("file:///srv/backup", windows=False) == "/srv/backup"
    with pytest.raises(ConfigError, match="names a host"):
        local_path("file://nas/share/backup", windows=False)


def test_long_paths_get_the_prefix_and_stay_long_below_it():
    deep = "C:\\" + "\\".join(["folder-with-a-long-name"] * 12)
    assert len(deep) > winpath.MAX_PATH
    long = winpath.long_path(deep)
    assert long == "\\\\?\\" + deep
    import ntpath

    assert ntpath.join(long, "x.txt").startswith("\\\\?\\C:\\")
    assert winpath.long_path("C:/a/./b/../c") == r"\\?\C:\a\c"  # \\?\ takes no '/', '.' or '..'
    assert winpath.long_path(r"\\nas\share\backup") == r"\\?\UNC\nas\share\backup"
    assert winpath.long_path(long) == long
    assert winpath.long_path("/srv/backup") == "/srv/backup"
    assert winpath.display(long) == deep
    assert winpath.display(r"\\?\UNC\nas\share\x") == r"\\nas\share\x"
    assert not winpath.is_unc(r"\\?\C:\x") and winpath.is_unc(r"\\nas\share")


class SharingViolation(PermissionError):
    winerror = winpath.ERROR_SHARING_VIOLATION


def opener(locked_for: int):
    """an open() that finds the file locked the first locked_for times"""
    calls = []

    def open_file(path, mode):
        calls.append(path)
        if len(calls) <= locked_for:
            raise SharingViolation(13, "The process cannot access the file because it is being used "
                                       "by another process", path)
        return open(os.devnull, mode)
    return open_file


def test_a_file_locked_briefly_is_waited_for():
    pauses = []
    assert not winpath.locked("scan.doc", opener(2), pauses.append)
    assert pauses == list(winpath.LOCKED_RETRIES[:2])


def test_a_file_locked_for_good_is_locked_after_brief_retries():
    pauses = []
    assert winpath.locked("outlook.pst", opener(99), pauses.append)
    assert pauses == list(winpath.LOCKED_RETRIES) and sum(pauses) < 5


def test_other_errors_are_not_locks():
    def denied(path, mode):
        raise PermissionError(13, "Permission denied", path)
    pauses = []
    assert not winpath.locked("x", denied, pauses.append) and pauses == []


# the command line, with Windows' file locking on and one file held by "Outlook"
WITH_A_LOCKED_FILE = """
import runpy, sys
from reconcile import portable, winpath
portable.LOCKS = True
real = winpath.locked

class SharingViolation(PermissionError):
    winerror = 32

def open_file(path, mode):
    if path.endswith("outlook.pst"):
        raise SharingViolation(13, "used by another process", path)
    return open(path, mode)

winpath.locked = lambda path: real(path, open_file, lambda s: None)
sys.argv[0] = "reconcile"
runpy.run_module("reconcile", run_name="__main__", alter_sys=True)
"""


def test_a_locked_file_is_skipped_with_exit_3_and_sent_once_free(local_dest, tmp_path):
    src, state = tmp_path / "src", tmp_path / "state"
    write(src / "mail" / "outlook.pst", b"mail", T0)
    write(src / "docs" / "a.txt", b"a", T0)
    args = ["apply", str(src), local_dest.url, "--state-dir", str(state)]
    p = subprocess.run([sys.executable, "-c", WITH_A_LOCKED_FILE, *args], capture_output=True, text=True)
    assert "Traceback" not in p.stderr
    assert p.returncode == 3, p.stdout + p.stderr
    out = p.stdout + p.stderr
    assert "mail/outlook.pst" in out and "locked" in out and "1 skipped" in out
    sent = tree(local_dest.url, with_mtime=False)
    assert sent["docs/a.txt"] == ("f", b"a") and "mail/outlook.pst" not in sent
    reconcile(*args, check=0)  # the lock is gone: the next run sends it
    assert tree(local_dest.url, with_mtime=False)["mail/outlook.pst"] == ("f", b"mail")


def test_state_and_config_under_appdata_on_windows(monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", "/AppData/Local")
    monkeypatch.setenv("APPDATA", "/AppData/Roaming")
    assert statedir.default_root() == os.path.join("/AppData/Local", "reconcile", "state")
    assert config.default_path() == os.path.join("/AppData/Roaming", "reconcile", "config.toml")


def test_state_and_config_under_application_support_on_macos(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setenv("HOME", "/Users/me")
    monkeypatch.setenv("USERPROFILE", "/Users/me")  # where the tests run on Windows
    support = "/Users/me/Library/Application Support/reconcile"
    assert statedir.default_root() == support + "/state"
    assert config.default_path() == support + "/config.toml"


def test_names_survive_a_legacy_console_code_page(tmp_path):
    src = tmp_path / "src"
    write(src / "日本語 café ✓.txt", b"x", T0)
    env = {"PYTHONIOENCODING": "cp437"}
    p = reconcile("plan", src, tmp_path / "dest", "--state-dir", tmp_path / "state", env=env, check=0)
    assert "\\u65e5\\u672c\\u8a9e" in p.stdout  # what cp437 cannot show, escaped
    reconcile("apply", src, tmp_path / "dest", "--state-dir", tmp_path / "state", env=env, check=0)


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no signal to stand in for Ctrl-Break on Windows "
                    "(sending a real one stops the whole console group): tested on Linux and macOS")
def test_ctrl_break_ends_a_run_as_ctrl_c(monkeypatch):
    # no SIGBREAK here: SIGUSR1 stands in for it
    monkeypatch.setattr(signal, "SIGBREAK", signal.SIGUSR1, raising=False)
    before = signal.getsignal(signal.SIGUSR1)
    try:
        portable.ctrl_break_as_ctrl_c()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(5)  # interrupted by the handler
    finally:
        signal.signal(signal.SIGUSR1, before)


def test_nfd_names_from_macos_reach_the_remote_once(local_dest, tmp_path):
    """HFS+ hands out names decomposed (NFD); the same name typed on Linux
    or Windows is composed (NFC). One file, sent once, never twice or deleted."""
    src, state = tmp_path / "src", tmp_path / "state"
    nfd = unicodedata.normalize("NFD", "Fotos für Zoë.jpg")
    write(src / nfd, b"photo", T0)
    reconcile("apply", src, local_dest.url, "--state-dir", state, check=0)
    assert tree(local_dest.url, with_mtime=False) == {nfd: ("f", b"photo")}
    p = reconcile("plan", src, local_dest.url, "--state-dir", state, check=0)
    assert "upload" not in p.stdout and "delete" not in p.stdout, p.stdout


@pytest.mark.skipif(shutil.which("plutil") is None, reason="plutil is macOS's own tool and this machine has "
                    "none (the public workflow's macOS job runs it); test_cron.py parses the plist here")
def test_the_launchd_agent_passes_plutil_lint():
    agent = Path(__file__).parent.parent / "cron" / "com.example.reconcile.photos.plist"
    p = subprocess.run(["plutil", "-lint", str(agent)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_a_source_on_ntfs_keeps_move_detection(ntfs_dest, local_dest, tmp_path):
    """A source on NTFS (here through ntfs-3g, which gives each file its NTFS
    file ID as inode number, as Windows' stat does): a renamed folder is one
    move on the destination, nothing sent again."""
    import json

    src, state = ntfs_dest.url, tmp_path / "state"
    for i in range(20):
        write(Path(src) / "album" / f"{i:02}.jpg", os.urandom(100), T0)
    reconcile("apply", src, local_dest.url, "--state-dir", state, check=0)
    os.rename(Path(src) / "album", Path(src) / "Album 2026")
    doc = json.loads(reconcile("plan", src, local_dest.url, "--state-dir", state, "--json", check=0).stdout)
    assert doc["operations"] == [{"op": "move", "kind": "dir", "from": "album", "to": "Album 2026", "files": 20}]
