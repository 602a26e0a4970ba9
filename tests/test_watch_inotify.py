"""reconcile's inotify reader on a real tree: paths stay right after folders
move, and what leaves the tree stops being watched."""

from __future__ import annotations

import time

import pytest

from reconcile.watch import inotify

pytestmark = pytest.mark.skipif(not inotify.available(), reason="inotify is Linux only")


def _changes(w, until, timeout: float = 10.0) -> list:
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got += w.read(0.1)
        if until(got):
            return got
    raise AssertionError(f"never reported: {[(c.path, c.lost) for c in got]}")


def test_a_renamed_folder_reports_under_its_new_name(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    w = inotify.InotifyWatcher(str(tmp_path), lambda p, d: False)
    try:
        assert w.watch_tree("") == []
        (tmp_path / "a").rename(tmp_path / "b")
        _changes(w, lambda got: any(c.path == "b" for c in got))
        (tmp_path / "b" / "deep" / "new.txt").write_bytes(b"x")
        got = _changes(w, lambda got: any(c.path == "b/deep/new.txt" for c in got))
        assert not any(c.path.startswith("a/") for c in got)
    finally:
        w.close()


def test_a_folder_moved_out_is_dropped_and_a_new_one_of_its_name_is_watched(tmp_path):
    root = tmp_path / "src"
    (root / "a" / "sub").mkdir(parents=True)
    w = inotify.InotifyWatcher(str(root), lambda p, d: False)
    try:
        w.watch_tree("")
        (root / "a").rename(tmp_path / "outside")
        (root / "a").mkdir()
        _changes(w, lambda got: any(c.path == "a" for c in got))
        w.read(0.2)  # quiet: the unpaired move is settled
        assert "a/sub" not in w.wd_of  # the moved-out folder's watches are gone
        (root / "a" / "file").write_bytes(b"x")
        _changes(w, lambda got: any(c.path == "a/file" for c in got))
        (tmp_path / "outside" / "sub" / "gone").write_bytes(b"y")
        assert not any("gone" in c.path for c in w.read(0.3))
    finally:
        w.close()


def test_excluded_folders_are_not_watched(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "kept").mkdir()
    w = inotify.InotifyWatcher(str(tmp_path), lambda p, d: p == "cache")
    try:
        w.watch_tree("")
        assert set(w.wd_of) == {"", "kept"}
        (tmp_path / "cache" / "x").write_bytes(b"x")
        (tmp_path / "cache2").write_bytes(b"y")
        got = _changes(w, lambda got: any(c.path == "cache2" for c in got))
        assert not any(c.path.startswith("cache/") for c in got)
    finally:
        w.close()
