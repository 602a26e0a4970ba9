"""What the planner may pair as a move: an inode reused by a new file is not
a rename, and without --delete files kept on the remote are never moved away."""

from __future__ import annotations

import os
import subprocess

from reconcile.diff import merge
from reconcile.entry import FILE, Entry
from reconcile.plan import make_plan, needs_hash
from tests.cli import reconcile
from tests.mirror import tree, write
from tests.test_plan import CAPS, d, f, ops, ordered, plan_for, remote_copy
from reconcile.excludes import Excludes

T0 = 1_600_000_000_000_000_000


def test_reused_inode_under_another_name_is_not_a_move():
    # config.json was deleted; settings.json got its inode, size and mtime, not its content
    prev = [f("config.json", 15, 10, inode=13, h=b"old")]
    cur = [f("settings.json", 15, 10, inode=13, h=b"new")]
    got = ops(plan_for(cur, prev, remote_copy(prev)))
    assert {"op": "upload", "path": "settings.json", "size": 15, "reason": "new"} in got
    assert not any(o["op"] == "move" for o in got)


def test_reused_inode_needs_a_hash_and_a_true_rename_still_moves():
    prev = [f("config.json", 15, 10, inode=13, h=b"same")]
    cur = [f("settings.json", 15, 10, inode=13)]
    changes = merge(ordered(cur), ordered(prev), ordered(remote_copy(prev)), Excludes(), 1)
    assert [e.path for e in needs_hash(changes, 1)] == ["settings.json"]  # an inode alone does not vouch
    cur = [f("settings.json", 15, 10, inode=13, h=b"same")]
    assert ops(plan_for(cur, prev, remote_copy(prev))) == [
        {"op": "move", "kind": "file", "from": "config.json", "to": "settings.json", "files": 1}]


def test_folder_rename_is_vouched_by_inodes_without_hashing():
    prev = [d("album"), *(f(f"album/p{i}.jpg", 100 + i, 10, inode=100 + i) for i in range(5))]
    cur = [d("trip"), *(f(f"trip/p{i}.jpg", 100 + i, 10, inode=100 + i) for i in range(5))]
    changes = merge(ordered(cur), ordered(prev), ordered(remote_copy(prev)), Excludes(), 1)
    assert needs_hash(changes, 1) == []
    assert ops(make_plan(changes, CAPS, True)) == [
        {"op": "move", "kind": "dir", "from": "album", "to": "trip", "files": 5}]


def test_without_delete_kept_remote_files_are_never_moved_away():
    # 2019/ was deleted locally in an earlier run and kept (no --delete): it is not in prev
    kept = [d("2019"), *(Entry(f"2019/p{i}.jpg", FILE, 50 + i, 10, hash=bytes([i])) for i in range(3))]
    cur = [d("sorted"), f("sorted/p1.jpg", 51, 10, inode=7, h=bytes([1]))]
    got = ops(plan_for(cur, [], kept, delete=False))
    assert got == [{"op": "upload", "path": "sorted/p1.jpg", "size": 51, "reason": "new"}]
    # with --delete the kept files go anyway, so they may serve as a cheap server-side move
    got = ops(plan_for(cur, [], kept, delete=True))
    assert any(o["op"] == "move" and o["from"].startswith("2019") for o in got)
    assert not any(o["op"] == "upload" for o in got)


def test_without_delete_a_folder_with_kept_files_is_not_moved_whole():
    prev = [d("a"), f("a/x", 1, 10, inode=1), f("a/y", 2, 10, inode=2)]
    remote = remote_copy(prev) + [Entry("a/kept", FILE, 9, 10)]
    cur = [d("b"), f("b/x", 1, 10, inode=1), f("b/y", 2, 10, inode=2)]
    got = ops(plan_for(cur, prev, remote, delete=False))
    assert not any(o["op"] == "move" and o["kind"] == "dir" for o in got)
    assert {(o.get("from"), o.get("to")) for o in got if o["op"] == "move"} == {("a/x", "b/x"), ("a/y", "b/y")}


def test_reused_inode_end_to_end_sends_the_new_content(tmp_path):
    """the real command line: a new file that takes over a deleted file's inode,
    size and mtime ends up on the remote with its own content."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src / "config.json", b'{"mode": "old"}', T0)
    reconcile("apply", src, dst, "--state-dir", state, "--delete", check=0)
    ino = os.stat(src / "config.json").st_ino
    # reuse the inode for different content: rename keeps it, then rewrite in place
    os.rename(src / "config.json", src / "settings.json")
    with open(src / "settings.json", "r+b") as fh:
        fh.write(b'{"user": "bob"}')
    os.utime(src / "settings.json", ns=(T0, T0))
    assert os.stat(src / "settings.json").st_ino == ino
    reconcile("apply", src, dst, "--state-dir", state, "--delete", "--max-delete", "1", check=0)
    assert tree(dst, with_mtime=False) == {"settings.json": ("f", b'{"user": "bob"}')}
    reconcile("verify", src, dst, "--state-dir", state, "--hash", check=0)


def test_a_moved_folder_keeps_its_files_hashes_in_the_snapshot(tmp_path):
    """so a later rename of one of its files can still be checked by content."""
    from reconcile import snapshot

    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    for i in range(3):
        write(src / "album" / f"p{i}.jpg", bytes([i]) * 100, T0)
    reconcile("apply", src, dst, "--state-dir", state, "--delete", check=0)
    os.rename(src / "album", src / "trip")
    doc = reconcile("apply", src, dst, "--state-dir", state, "--delete", "--json", check=0).stdout
    assert '"op": "move", "kind": "dir"' in doc
    hashes = {e.path: e.hash for e in snapshot.read_entries(str(state / "snapshot.msgpack"))}
    assert all(hashes[f"trip/p{i}.jpg"] is not None for i in range(3))
    os.rename(src / "trip" / "p1.jpg", src / "trip" / "renamed.jpg")
    doc = reconcile("plan", src, dst, "--state-dir", state, "--delete", "--json", check=0).stdout
    assert '"from": "trip/p1.jpg", "to": "trip/renamed.jpg"' in doc


def test_only_files_that_could_pair_are_hashed_before_the_plan():
    # a first sync has nothing to pair with: its files are hashed as they are sent
    cur = [f("a.jpg", 10, 10), f("b.jpg", 20, 10), f("c.jpg", 30, 10)]
    changes = merge(ordered(cur), [], [], Excludes(), 1)
    assert needs_hash(changes, 1) == []
    # a deleted file of 20 bytes with a known hash: only a new file of that size may be its rename
    prev = [f("old.jpg", 20, 10, inode=99, h=b"h20")]
    changes = merge(ordered(cur), ordered(prev), ordered(remote_copy(prev)), Excludes(), 1)
    assert [e.path for e in needs_hash(changes, 1)] == ["b.jpg"]
    # a remote file the last snapshot does not vouch for pairs by the hash it carries
    stray = [Entry("stray.jpg", FILE, 30, 10, hash=b"h30")]
    changes = merge(ordered(cur), [], ordered(stray), Excludes(), 1)
    assert [e.path for e in needs_hash(changes, 1)] == ["c.jpg"]
