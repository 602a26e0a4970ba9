"""Issue 24.5: the state folder is trusted only when it is ours and private;
its files are never opened through a symlink; a journal is replayed only for
its own pair and only with safe paths; a journal or snapshot of the wrong
shape is set aside with a warning, never a crash."""

from __future__ import annotations

import os
from pathlib import Path

import msgpack
import pytest

from reconcile import journal, snapshot
from reconcile.entry import DIR
from reconcile.plan import Op
from tests.cli import reconcile
from tests.mirror import tree, write

T0 = 1_600_000_000_000_000_000


@pytest.fixture
def pair(tmp_path):
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src / "a", b"1", T0)
    write(src / "sub" / "b", b"2", T0)
    reconcile("apply", src, dst, "--state-dir", state, check=0)
    return src, dst, state


def _one_line_error(p) -> str:
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    return lines[0]


@pytest.mark.parametrize("cmd", ["apply", "plan", "status"])
def test_a_group_or_world_writable_state_folder_is_refused(pair, cmd):
    src, dst, state = pair
    os.chmod(state, 0o777)
    line = _one_line_error(reconcile(cmd, src, dst, "--state-dir", state, check=2))
    assert f"chmod 700 {state}" in line
    os.chmod(state, 0o700)
    reconcile(cmd, src, dst, "--state-dir", state, check=0)


def test_a_state_folder_of_another_user_is_refused(pair):
    src, dst, state = pair
    os.chown(state, 65534, 65534)
    line = _one_line_error(reconcile("apply", src, dst, "--state-dir", state, check=2))
    assert "uid 65534" in line and "--state-dir" in line


def test_a_symlinked_state_folder_is_refused(pair, tmp_path):
    src, dst, state = pair
    os.symlink(state, tmp_path / "link")
    line = _one_line_error(reconcile("apply", src, dst, "--state-dir", tmp_path / "link", check=2))
    assert "symlink" in line


@pytest.mark.parametrize("name", ["lock", "backup-dirs.json.tmp", "last-run.json.tmp", "journal.msgpack.tmp"])
def test_state_files_are_never_opened_through_a_symlink(pair, tmp_path, name):
    src, dst, state = pair
    victim = tmp_path / "victim"
    victim.write_bytes(b"a root-owned file")
    path = state / name
    if path.exists():
        path.unlink()
    os.symlink(victim, path)
    write(src / "new", b"3", T0)
    reconcile("apply", src, dst, "--state-dir", state, "--backup-dir", ".trash")
    assert victim.read_bytes() == b"a root-owned file"


def _journal(state: Path, header: dict, ops: list[Op]) -> None:
    j = journal.Journal(str(state / "journal.msgpack"))
    j.start({"plan_id": "x", **header}, ops)
    j.close()


def test_a_journal_of_another_pair_is_never_replayed(tmp_path):
    """A->X leaves a journal in a shared --state-dir; B->Y (no --delete) must not run it"""
    a, x, b, y, state = (tmp_path / n for n in ("a", "x", "b", "y", "state"))
    write(a / "f", b"1", T0)
    write(b / "keep", b"mine", T0)
    write(y / "keep", b"mine", T0)
    write(y / "also-mine", b"not in b, and B runs without --delete", T0)
    state.mkdir(mode=0o700)
    _journal(state, {"source": str(a), "dest": str(x)}, [Op("delete", "keep"), Op("delete", "also-mine")])
    p = reconcile("apply", b, y, "--state-dir", state, check=0)
    assert "another pair" in p.stderr
    assert (y / "keep").read_bytes() == b"mine" and (y / "also-mine").exists()
    assert (state / "journal.msgpack.other-pair").exists()


@pytest.mark.parametrize("op", [Op("delete", "../outside/victim"), Op("move", "a", to="../outside/moved"),
                                Op("delete", "/etc/x"), Op("delete", "d", DIR, files=["../../outside/victim"]),
                                Op("move", "a", to="b", backup="../outside/moved")])
def test_a_journal_path_that_leaves_the_root_is_never_replayed(pair, tmp_path, op):
    src, dst, state = pair
    write(tmp_path / "outside" / "victim", b"not yours", T0)
    _journal(state, {"source": str(src), "dest": str(dst)}, [op])
    before = tree(dst)
    p = reconcile("apply", src, dst, "--state-dir", state, check=0)
    assert "ignoring an unreadable journal" in p.stderr and "unsafe path" in p.stderr
    assert sorted(os.listdir(tmp_path / "outside")) == ["victim"]
    assert tree(dst) == before


@pytest.mark.parametrize("rows", [
    [{"op": "delete", "path": 5, "kind": "f", "to": None, "size": 0, "reason": "", "files": [], "dirs": [],
      "entry": None}],
    [{"op": "rm -rf", "path": "a", "kind": "f", "to": None, "size": 0, "reason": "", "files": [], "dirs": [],
      "entry": None}],
    [{"op": "upload", "path": "a", "kind": "f", "to": None, "size": "big", "reason": "", "files": [],
      "dirs": [], "entry": ["a", "f", 1, T0, None, None, None, None, None]}],
    "not a list", [1, 2, 3]])
def test_a_journal_of_the_wrong_shape_is_set_aside(pair, rows):
    src, dst, state = pair
    packer = msgpack.Packer(use_bin_type=True)
    (state / "journal.msgpack").write_bytes(
        packer.pack({"version": journal.VERSION, "source": str(src), "dest": str(dst)}) + packer.pack(rows))
    for _ in range(2):
        p = reconcile("apply", src, dst, "--state-dir", state, check=0)
        assert "Traceback" not in p.stderr
    assert (state / "journal.msgpack.corrupt").exists()


def test_a_snapshot_of_the_wrong_shape_is_set_aside(pair):
    src, dst, state = pair
    w = snapshot.SnapshotWriter(str(state / "snapshot.msgpack"), {"source": str(src)})
    w._add(msgpack.packb([b"a", "f"]))  # a row of two fields, under a valid checksum
    w.finish()
    w.commit()
    write(src / "new", b"3", T0)
    p = reconcile("apply", src, dst, "--state-dir", state, check=0)
    assert "ignoring the previous snapshot" in p.stderr and "Traceback" not in p.stderr
    assert (state / "snapshot.msgpack.corrupt").exists()
    assert (dst / "new").read_bytes() == b"3"
    p = reconcile("apply", src, dst, "--state-dir", state, check=0)  # a fresh snapshot: no warning now
    assert "snapshot" not in p.stderr
