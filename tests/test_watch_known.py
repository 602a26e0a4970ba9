"""A run reconcile watch starts for a few changed paths is planned on what
its last clean run left (reconcile/known.py): no listing of the remote, only
the snapshot blocks that hold those paths read and written again. The copy
and the snapshot stay exact; what changed on the remote behind the watcher's
back is put right by the listing a failed operation asks for at once, or by
the periodic full rescan."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from reconcile import snapshot
from reconcile.engine import Run, RunOptions
from reconcile.excludes import Excludes
from reconcile.hashing import hash_file
from reconcile.known import Known
from reconcile.report import ApplyReporter
from reconcile.walk import WalkReport, walk_rows
from reconcile.watch.changes import DirtySet
from tests.test_walk_partial import _make, _mutate
from tests.watching import Watcher, tree_files, wait_dest


def _run(src: Path, dest: Path, state: Path, known: Known, only: list[str] | None, **kw):
    opts = RunOptions(**{"delete": True, **kw}, state_dir=str(state), known=known, walk_only=only)
    run = Run(str(src), str(dest), opts, ApplyReporter(quiet=True))
    try:
        return run.apply(), run.state.snapshot
    finally:
        run.close()


def _tree(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        out[p.relative_to(root).as_posix()] = "dir" if p.is_dir() else p.read_bytes()
    return out


def _check_snapshot(src: Path, path: str) -> None:
    """the snapshot a run wrote in place: sound, and the rows of a whole walk"""
    snapshot.verify(path)
    rows = list(snapshot.read_rows(path))
    walked = list(walk_rows(str(src), Excludes(), WalkReport()))
    assert [r[:7] for r in rows] == [r[:7] for r in walked]
    for r in rows:
        if r[7] is not None:  # a recorded hash is the file's
            assert r[7] == hash_file(os.path.join(src, os.fsdecode(r[0])), r[2], r[3])


@pytest.mark.parametrize("seed", range(8))
def test_triggered_runs_planned_on_the_last_run_mirror_exactly(tmp_path, seed):
    rng = random.Random(seed)
    src, dest, state = tmp_path / "src", tmp_path / "dest", tmp_path / "state"
    src.mkdir()
    dest.mkdir()
    _make(src, rng, 2500)  # a few blocks of the snapshot's index
    known = Known()
    _run(src, dest, state, known, None)  # the start-up run lists
    assert known.snapshot_id is not None and len(known.index) > 2
    for step in range(6):
        dirty = DirtySet()
        mutations = [_mutate(src, rng) for _ in range(rng.randint(1, 3))]
        changed = [p for m in mutations for p in m]
        for p in changed:
            dirty.add(p)
        if not dirty:
            continue
        result, snap = _run(src, dest, state, known, dirty.take())
        assert known.used and known.snapshot_id is not None, (step, changed)
        assert result.outcome.complete
        assert _tree(dest) == _tree(src), (step, changed)
        _check_snapshot(src, snap)
        if len(mutations) == 1 and len(changed) == 2 and not (src / changed[0]).exists() and (src / changed[1]).is_dir() \
                and any((src / changed[1]).iterdir()):
            ops = [op.op for op in result.plan.ops]
            assert "move" in ops and "upload" not in ops, (changed, ops)  # a folder rename: one move


def test_a_triggered_run_does_not_list_and_a_full_run_puts_right_what_changed_behind_it(tmp_path):
    src, dest, state = tmp_path / "src", tmp_path / "dest", tmp_path / "state"
    for folder in ("a", "b"):
        (src / folder).mkdir(parents=True)
        for i in range(3):
            (src / folder / f"{i}.txt").write_bytes(b"%s %d" % (folder.encode(), i))
    dest.mkdir()
    known = Known()
    _run(src, dest, state, known, None)
    (dest / "a" / "stray.txt").write_bytes(b"put there behind the watcher's back")
    (dest / "a" / "0.txt").unlink()
    (src / "b" / "new.txt").write_bytes(b"new")
    _run(src, dest, state, known, ["b/new.txt"])
    assert known.used
    # the remote was not listed: neither change behind the watcher's back was seen
    assert (dest / "a" / "stray.txt").exists() and not (dest / "a" / "0.txt").exists()
    assert (dest / "b" / "new.txt").read_bytes() == b"new"
    _run(src, dest, state, known, None)  # the periodic full rescan lists
    assert not known.used
    assert _tree(dest) == _tree(src)


def test_without_delete_what_the_remote_keeps_is_known(tmp_path):
    """extras: a file deleted at the source stays on the remote (no --delete);
    a triggered run that puts a folder where it lies must still see it"""
    src, dest, state = tmp_path / "src", tmp_path / "dest", tmp_path / "state"
    (src / "a").mkdir(parents=True)
    (src / "a" / "old").write_bytes(b"old")
    (src / "keep").write_bytes(b"k")
    dest.mkdir()
    known = Known()
    _run(src, dest, state, known, None, delete=False)
    (src / "a" / "old").unlink()
    _run(src, dest, state, known, ["a/old"], delete=False)
    assert known.used and (dest / "a" / "old").read_bytes() == b"old"
    assert list(known.extras) == [b"a/old"]
    (src / "a" / "old").write_bytes(b"back again, longer")
    result, _ = _run(src, dest, state, known, ["a/old"], delete=False)
    assert known.used and [op.reason for op in result.plan.ops] == ["changed"]  # overwrites what it knew
    assert (dest / "a" / "old").read_bytes() == b"back again, longer" and not known.extras


def test_a_move_whose_source_left_the_remote_sends_the_files_and_asks_for_a_listing(tmp_path):
    """the move finds its source gone and sends the folder's files in the same
    run (apply.py); the remote was not as the last run left it, so whatever
    else changed there behind the watcher's back is found by a listing at once."""
    src, dest, state = tmp_path / "src", tmp_path / "dest", tmp_path / "state"
    (src / "album").mkdir(parents=True)
    for i in range(5):
        (src / "album" / f"p{i}.jpg").write_bytes(b"photo %d" % i)
    (src / "notes.txt").write_bytes(b"the destination is not left empty (that the guards refuse)")
    dest.mkdir()
    known = Known()
    _run(src, dest, state, known, None)
    shutil.rmtree(dest / "album")  # behind the watcher's back
    (src / "album").rename(src / "album-2024")
    result, _ = _run(src, dest, state, known, ["album", "album-2024"])
    assert result.outcome.count("skipped") == 0 and result.outcome.complete
    assert _tree(dest) == _tree(src)
    assert known.used and known.recheck
    _run(src, dest, state, known, ["album", "album-2024"])  # what the watcher runs at once: it lists
    assert not known.used and not known.recheck
    assert _tree(dest) == _tree(src)


def test_another_run_of_the_pair_between_two_triggered_runs_means_a_listing(tmp_path):
    src, dest, state = tmp_path / "src", tmp_path / "dest", tmp_path / "state"
    src.mkdir()
    dest.mkdir()
    (src / "a.txt").write_bytes(b"a")
    known = Known()
    _run(src, dest, state, known, None)
    _run(src, dest, state, None, None)  # a cron apply of the same pair
    (src / "b.txt").write_bytes(b"b")
    _run(src, dest, state, known, ["b.txt"])
    assert not known.used and known.snapshot_id is not None
    assert _tree(dest) == _tree(src)


@pytest.fixture
def src(tmp_path):
    root = tmp_path / "src"
    (root / "album").mkdir(parents=True)
    for i in range(20):
        (root / "album" / f"p{i}.jpg").write_bytes(b"photo %d" % i)
    (root / "notes.txt").write_bytes(b"the destination is not left empty (that the guards refuse)")
    return root


def _until_planned_on_what_was_left(w: Watcher, src: Path, local_dest) -> None:
    """the start-up run lists; the one a change starts after it is planned on what that left"""
    wait_dest(local_dest, tree_files(src), w)
    (src / "saved.txt").write_bytes(b"saved")
    wait_dest(local_dest, tree_files(src), w)
    w.wait_log(lambda t: "planned on the remote as the last run left it" in t)


def test_the_watcher_lists_again_at_once_when_the_remote_was_not_as_left(src, local_dest, tmp_path):
    w = Watcher(src, local_dest, tmp_path / "state", tmp_path / "watch.log", ["--delete"])
    try:
        _until_planned_on_what_was_left(w, src, local_dest)
        shutil.rmtree(Path(local_dest.url) / "album")  # behind the watcher's back
        (src / "album").rename(src / "album-2024")
        wait_dest(local_dest, tree_files(src), w)  # the full rescan is an hour away
        w.wait_log(lambda t: "running again with a full listing" in t)
    finally:
        w.stop()


def test_the_watcher_lists_again_at_once_after_a_failed_upload(src, local_dest, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root (CI runs as root)")
    w = Watcher(src, local_dest, tmp_path / "state", tmp_path / "watch.log", ["--delete"])
    try:
        _until_planned_on_what_was_left(w, src, local_dest)
        # a run that fails to send a file (its folder made read-only on the destination,
        # as a bind mount over itself) leaves the remote otherwise than planned
        album = Path(local_dest.url) / "album"
        subprocess.run(["mount", "--bind", str(album), str(album)], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,ro,bind", str(album)], check=True)
            (src / "album" / "p0.jpg").write_bytes(b"edited")
            w.wait_log(lambda t: "running again with a full listing" in t)
        finally:
            subprocess.run(["umount", str(album)], check=True)
        (src / "saved-2.txt").write_bytes(b"saved")
        wait_dest(local_dest, tree_files(src), w)  # the full rescan is an hour away
    finally:
        w.stop()


def test_a_triggered_run_leaves_block_records_to_the_full_runs(tmp_path, monkeypatch):
    # pruning the delta block records reads the whole snapshot: a run for a few
    # dirty paths must not pay it (the start-up and periodic full runs prune)
    from reconcile.engine import state as engine_state

    monkeypatch.setenv("RECONCILE_TEST_LOCAL_DELTA", "1")  # records on ext4 too
    src, dest, state = tmp_path / "src", tmp_path / "dest", tmp_path / "state"
    (src / "d").mkdir(parents=True)
    dest.mkdir()
    with open(src / "big.img", "wb") as f:
        f.truncate(64 << 20)  # a large file: it gets a block record
    (src / "d" / "a.txt").write_bytes(b"a")
    reads = []
    real = engine_state.large_files
    monkeypatch.setattr(engine_state, "large_files", lambda *a: reads.append(a) or real(*a))
    known = Known()
    _run(src, dest, state, known, None)
    assert len(reads) == 1  # the full run prunes
    (src / "d" / "a.txt").write_bytes(b"b")
    dirty = DirtySet()
    dirty.add("d/a.txt")
    result, _ = _run(src, dest, state, known, dirty.take())
    assert known.used and result.outcome.complete
    assert (dest / "d" / "a.txt").read_bytes() == b"b"
    assert len(reads) == 1
