"""Safety rules of apply with no other test (issue 25):

- a delete whose source came back between the plan and the moment it runs is
  skipped (apply.py, _do_delete re-checks the source), on every remote;
- an upload whose source changed or went away since the plan is skipped, and
  the next run sends it (apply.py, _source_moved);
- the journal is written through to disk (fsync) before the first change to
  the remote. What an fsync buys, surviving a power cut, cannot be shown
  here: a SIGKILL leaves the page cache intact, and losing it needs a VM or a
  dm-flakey device this machine's kernel and CI do not give us. So the test
  checks the order of the calls: the journal file, then its folder, are
  fsynced before the first remote change.
"""

from __future__ import annotations

import os

from reconcile.engine import Run, RunOptions
from reconcile.remotes.local import LocalRemote
from tests.mirror import SilentReporter, write
from tests.storage import read_dest

T0 = 1_600_000_000_000_000_000


class BringsBack(SilentReporter):
    """puts a deleted source file back just as apply is about to delete it on the remote."""

    def __init__(self, src, data: bytes) -> None:
        super().__init__()
        self.src, self.data = src, data
        self.results: dict[str, tuple[str, str | None]] = {}

    def op_started(self, op) -> None:
        if op.op == "delete":
            write(self.src / op.path, self.data, T0)

    def op_ended(self, op, result, error) -> None:
        super().op_ended(op, result, error)
        self.results[f"{op.op} {op.path}"] = (result, error)


def apply(src, dest, state, reporter) -> None:
    opts = RunOptions(state_dir=str(state), delete=True, max_delete=10)
    opts.remote = dest.options
    opts.remote.state_dir = None
    run = Run(str(src), dest.url, opts, reporter)
    try:
        run.apply()
    finally:
        run.close()


def test_delete_skipped_when_the_source_came_back(dest, tmp_path):
    src, state = tmp_path / "src", tmp_path / "state"
    write(src / "keep.txt", b"k", T0)
    write(src / "back.txt", b"precious", T0)
    apply(src, dest, state, SilentReporter())
    assert read_dest(dest).files["back.txt"] == b"precious"
    (src / "back.txt").unlink()
    reporter = BringsBack(src, b"precious")
    apply(src, dest, state, reporter)
    assert reporter.results == {"delete back.txt": ("skipped", "the source has it again")}
    assert read_dest(dest).files == {"keep.txt": b"k", "back.txt": b"precious"}


class ChangesSource(SilentReporter):
    """edits one source file and removes another just as apply is about to send them."""

    def __init__(self, src) -> None:
        super().__init__()
        self.src = src
        self.results: dict[str, tuple[str, str | None]] = {}

    def op_started(self, op) -> None:
        if op.path == "edited.txt":
            write(self.src / op.path, b"edited after the plan", T0 + 5 * 10**9)
        elif op.path == "gone.txt":
            (self.src / op.path).unlink()

    def op_ended(self, op, result, error) -> None:
        super().op_ended(op, result, error)
        self.results[op.path] = (result, error)


def test_upload_skipped_when_the_source_changed_since_the_plan(dest, tmp_path):
    src, state = tmp_path / "src", tmp_path / "state"
    write(src / "edited.txt", b"v1", T0)
    apply(src, dest, state, SilentReporter())
    write(src / "edited.txt", b"v2 planned", T0 + 10**9)
    write(src / "gone.txt", b"new", T0)
    reporter = ChangesSource(src)
    apply(src, dest, state, reporter)
    assert reporter.results == {
        "edited.txt": ("skipped", "the source file changed since the plan; the next run sends it"),
        "gone.txt": ("skipped", "the source file is gone")}
    assert read_dest(dest).files == {"edited.txt": b"v1"}  # never the new bytes under the planned size and mtime
    apply(src, dest, state, SilentReporter())
    assert read_dest(dest).files == {"edited.txt": b"edited after the plan"}


def test_journal_is_fsynced_before_the_first_remote_change(tmp_path, monkeypatch):
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src / "a.txt", b"a", T0)
    events: list[str] = []
    real_fsync, real_upload = os.fsync, LocalRemote.upload

    def fsync(fd: int) -> None:
        events.append("fsync " + os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def upload(self, *a, **kw):
        events.append("upload")
        return real_upload(self, *a, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(LocalRemote, "upload", upload)
    run = Run(str(src), str(dst), RunOptions(state_dir=str(state)), SilentReporter())
    try:
        run.apply()
    finally:
        run.close()
    first_change = events.index("upload")
    assert "fsync journal.msgpack.tmp" in events[:first_change], events
    assert "fsync state" in events[events.index("fsync journal.msgpack.tmp"):first_change], events
