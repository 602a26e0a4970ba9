"""The source walk runs ahead while the remote's first row is awaited (spool.py)."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from reconcile import spool
from reconcile.spool import Spool, walk_while_waiting


def rows(n: int, start: int = 0) -> list[tuple]:
    # a row as the walk makes it, with an undecodable name and a symlink target
    return [(b"d/f\xff%07d" % i, "f", i, i * 1_000_000_000, i, 1, 0o100644, None,
             "t\udcff" if i % 3 == 0 else None, None) for i in range(start, start + n)]


class Counting:
    """a walk that says when it has handed out `signal_at` rows."""

    def __init__(self, items: list[tuple], signal_at: int, fail_at: int | None = None) -> None:
        self.items, self.signal_at, self.fail_at = items, signal_at, fail_at
        self.taken = 0
        self.reached = threading.Event()

    def __iter__(self):
        for row in self.items:
            if self.fail_at is not None and self.taken == self.fail_at:
                raise OSError(5, "Input/output error")
            self.taken += 1
            if self.taken >= self.signal_at:
                self.reached.set()
            yield row


def late_remote(walk: Counting, remote_rows: list[tuple]):
    """a listing whose first row comes only once the walk has run far ahead."""
    if not walk.reached.wait(10):
        raise AssertionError("the walk did not run while the remote's first row was awaited")
    yield from remote_rows


def test_walk_runs_ahead_while_the_remote_has_not_started():
    local = rows(5000)
    walk = Counting(local, signal_at=4000)
    remote = rows(3, start=100)
    walked, listed = walk_while_waiting(iter(walk), late_remote(walk, remote), None)
    assert walk.taken >= 4000  # before the merge has read a single row
    assert list(listed) == remote
    assert list(walked) == local


def test_rows_past_the_memory_bound_go_to_a_private_file_and_come_back_in_order(monkeypatch, tmp_path):
    monkeypatch.setattr(spool, "MEMORY_ROWS", 100)
    s = Spool(str(tmp_path))
    chunks = [rows(60, start=i * 60) for i in range(10)]
    for c in chunks:
        s.add(c)
    assert s.held == 60 and s.file is not None  # the second chunk would pass the bound
    assert stat.S_IMODE(os.fstat(s.file.fileno()).st_mode) == 0o600
    assert os.listdir(tmp_path) == []  # unlinked: nothing left behind by a killed run
    assert list(s.drain()) == [r for c in chunks for r in c]
    assert s.file is None


def test_a_walk_error_is_raised_after_the_rows_before_it(monkeypatch):
    monkeypatch.setattr(spool, "MEMORY_ROWS", 50)
    local = rows(700)
    walk = Counting(local, signal_at=10**9, fail_at=650)
    failed = threading.Event()

    def remote():  # comes only once the walk has failed in the thread
        assert failed.wait(10)
        yield from rows(1)

    fail = spool.Spool.fail
    monkeypatch.setattr(spool.Spool, "fail", lambda self, exc: (fail(self, exc), failed.set()))
    walked, listed = walk_while_waiting(iter(walk), remote(), None)
    assert walk.taken == 650  # all of it in the thread, then the error
    got = []
    with pytest.raises(OSError, match="Input/output error"):
        for row in walked:
            got.append(row)
    assert got == local[:650]
    assert list(listed) == rows(1)


def test_a_remote_that_fails_before_its_first_row_stops_the_walk():
    def endless():
        i = 0
        while True:
            yield (b"f%09d" % i, "f", 0, 0, 0, 0, 0, None, None, None)
            i += 1
            if i == 1000:
                started.set()

    started = threading.Event()

    def failing():
        started.wait(10)
        raise ConnectionError("gone")
        yield

    with pytest.raises(ConnectionError):
        walk_while_waiting(endless(), failing(), None)  # returns: the endless walk was stopped
    assert not any(t.name == "walk-ahead" for t in threading.enumerate())


def test_an_empty_remote_and_an_empty_walk():
    walked, listed = walk_while_waiting(iter(()), iter(()), None)
    assert list(walked) == [] and list(listed) == []


def test_a_run_walks_the_source_while_the_listing_is_late(tmp_path, monkeypatch):
    """the engine reads a late listing through walk_while_waiting: the source
    walk has read its folders before the remote's first row comes."""
    import reconcile.walk
    from reconcile.engine import Run, RunOptions
    from tests.mirror import SilentReporter, tree

    src, dst = tmp_path / "src", tmp_path / "dst"
    for d in range(20):
        (src / f"d{d:02}").mkdir(parents=True)
        for f in range(5):
            (src / f"d{d:02}" / f"f{f}").write_text(f"{d}/{f}")
    dst.mkdir()
    (dst / "stale").write_text("x")
    read_dirs = []
    walked_far = threading.Event()
    real_listdir = os.listdir

    def listdir(path):
        if os.fsdecode(path).startswith(str(src)):
            read_dirs.append(path)
            if len(read_dirs) >= 21:
                walked_far.set()
        return real_listdir(path)

    monkeypatch.setattr(reconcile.walk.os, "listdir", listdir)
    r = Run(str(src), str(dst), RunOptions(state_dir=str(tmp_path / "state"), delete=True, max_delete=10),
            SilentReporter())
    listing = r._listing_rows

    def late_listing():
        if not walked_far.wait(10):
            raise AssertionError("the source walk did not run while the listing was awaited")
        yield from listing()

    r._listing_rows = late_listing
    try:
        r.apply()
    finally:
        r.close()
    assert tree(dst) == tree(src)
