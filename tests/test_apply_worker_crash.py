"""A bug in an upload worker thread must never end in a run that says it
is complete: the journal stays, the snapshot is not replaced."""

from __future__ import annotations

import os

import pytest

from reconcile.remotes.local import LocalRemote
from reconcile.remotes.sftp import SftpRemote
from tests.mirror import run, tree, write
from tests.test_sftp import no_agent_no_config, root  # noqa: F401

T0 = 1_600_000_000_000_000_000


def _tree(src):
    for i in range(20):
        write(src / f"f{i:02d}", b"x" * (i + 1), T0)


def _assert_not_recorded(state) -> None:
    assert not (state / "snapshot.msgpack").exists()
    assert (state / "journal.msgpack").exists()


def test_bug_in_an_upload_worker_is_raised_not_reported_ok(tmp_path, monkeypatch):
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    _tree(src)
    real = LocalRemote.upload

    def boom(self, local_path, path, *a, **kw):
        if path == "f07":
            raise RuntimeError("simulated bug")
        return real(self, local_path, path, *a, **kw)

    monkeypatch.setattr(LocalRemote, "upload", boom)
    with pytest.raises(RuntimeError, match="simulated bug"):
        run(src, str(dst), state)
    _assert_not_recorded(state)
    monkeypatch.undo()
    res = run(src, str(dst), state)  # the next run finishes the work
    assert res.outcome.complete and tree(dst) == tree(src)


def test_bug_in_a_pipelined_batch_is_raised_not_reported_ok(sftp_dest, root, tmp_path, monkeypatch):
    src, state = tmp_path / "src", tmp_path / "state"
    _tree(src)
    real = SftpRemote._read_small

    def boom(self, item, *a, **kw):
        if item.path == "f07":
            raise MemoryError("simulated: the file grew huge after the plan")
        return real(self, item, *a, **kw)

    monkeypatch.setattr(SftpRemote, "_read_small", boom)
    with pytest.raises(MemoryError):
        run(src, sftp_dest.url, state, options=sftp_dest.options)
    _assert_not_recorded(state)
    monkeypatch.undo()
    res = run(src, sftp_dest.url, state, options=sftp_dest.options)
    assert res.outcome.complete
    assert {p for p, v in tree(root).items() if v[0] == "f"} == {f"f{i:02d}" for i in range(20)}
