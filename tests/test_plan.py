"""The planner and the merge, with no I/O at all."""

from __future__ import annotations

from reconcile.diff import file_changed, merge, with_implied_dirs
from reconcile.entry import DIR, FILE, Entry, entry_key
from reconcile.excludes import Excludes
from reconcile.plan import make_plan
from reconcile.remotes.base import Capabilities

CAPS = Capabilities()
S3_LIKE = Capabilities(dir_move=False, empty_dirs=False)


def f(path, size=1, mtime=10, inode=0, h=None):
    return Entry(path, FILE, size, mtime, inode or abs(hash(path)) % 10**9, 1, 0o644, h)


def d(path):
    return Entry(path, DIR, 0, 1, abs(hash(path + "/")) % 10**9, 1, 0o755)


def ordered(entries):
    return sorted(entries, key=entry_key)


def plan_for(cur, prev, rem, caps=CAPS, delete=True):
    changes = merge(ordered(cur), ordered(prev), ordered(rem), Excludes(), caps.mtime_precision_ns)
    return make_plan(changes, caps, delete)


def ops(plan):
    return [o.to_json() for o in plan.ops]


def remote_copy(entries):
    return [Entry(e.path, e.kind, e.size, e.mtime_ns) for e in entries]


def test_file_changed_rule():
    a = f("x", 5, 1_000_000_001)
    assert not file_changed(a, f("x", 5, 1_000_000_001))
    assert file_changed(a, f("x", 6, 1_000_000_001))
    assert file_changed(a, f("x", 5, 2_000_000_000))
    assert not file_changed(a, f("x", 5, 1_900_000_000), precision_ns=1_000_000_000)
    assert not file_changed(a, Entry("x", FILE, 5, None))  # unknown mtime: size decides
    assert file_changed(Entry("x", FILE, 5, 1, hash=b"1"), Entry("x", FILE, 5, 1, hash=b"2"), checksum=True)


def test_nothing_to_do():
    tree = [d("a"), f("a/x"), f("b")]
    assert plan_for(tree, tree, remote_copy(tree)).ops == []


def test_new_and_changed_files_upload():
    prev = [f("a", 1, 10)]
    cur = [f("a", 2, 20), f("b")]
    got = ops(plan_for(cur, prev, remote_copy(prev)))
    assert got == [{"op": "upload", "path": "a", "size": 2, "reason": "changed"},
                   {"op": "upload", "path": "b", "size": 1, "reason": "new"}]


def test_directory_rename_is_one_move():
    old = [d("photos")] + [f(f"photos/{i:04}.jpg", 100, 10, inode=1000 + i) for i in range(1000)]
    new = [d("pictures")] + [f(f"pictures/{i:04}.jpg", 100, 10, inode=1000 + i) for i in range(1000)]
    got = ops(plan_for(new, old, remote_copy(old)))
    assert got == [{"op": "move", "kind": "dir", "from": "photos", "to": "pictures", "files": 1000}]


def test_directory_rename_with_edits_inside():
    old = [d("p"), f("p/a", inode=1), f("p/b", inode=2), f("p/c", inode=3)]
    new = [d("q"), f("q/a", inode=1), f("q/b", 7, 99, inode=2), f("q/new", inode=9)]
    got = ops(plan_for(new, old, remote_copy(old)))
    assert got[0] == {"op": "move", "kind": "dir", "from": "p", "to": "q", "files": 3}
    assert {"op": "upload", "path": "q/b", "size": 7, "reason": "changed"} in got
    assert {"op": "upload", "path": "q/new", "size": 1, "reason": "new"} in got
    assert {"op": "delete", "kind": "file", "path": "q/c"} in got
    assert len(got) == 4


def test_swap_goes_through_a_temp_name():
    prev = [f("a", 1, 10, inode=1, h=b"A"), f("b", 2, 20, inode=2, h=b"B")]
    cur = [f("a", 2, 20, inode=2, h=b"B"), f("b", 1, 10, inode=1, h=b"A")]
    plan = plan_for(cur, prev, remote_copy(prev))
    assert plan.count("upload") == 0
    moves = [(o.path, o.to) for o in plan.ops]
    assert len(moves) == 3 and ".reconcile-tmp-" in moves[0][1]


def test_file_replaced_by_directory():
    prev = [f("x", inode=1)]
    cur = [d("x"), f("x/y", inode=2)]
    got = ops(plan_for(cur, prev, remote_copy(prev), delete=False))
    assert got == [{"op": "delete", "kind": "file", "path": "x", "reason": "replaced"},
                   {"op": "upload", "path": "x/y", "size": 1, "reason": "new"}]


def test_directory_replaced_by_file():
    prev = [d("x"), f("x/y", inode=2)]
    cur = [f("x", inode=3)]
    got = ops(plan_for(cur, prev, remote_copy(prev), delete=False))
    assert got == [{"op": "delete", "kind": "dir", "path": "x", "files": 1, "reason": "replaced"},
                   {"op": "upload", "path": "x", "size": 1, "reason": "new"}]


def test_case_only_rename_is_a_move():
    prev = [f("Photo.JPG", inode=5)]
    cur = [f("photo.jpg", inode=5)]
    assert ops(plan_for(cur, prev, remote_copy(prev))) == [
        {"op": "move", "kind": "file", "from": "Photo.JPG", "to": "photo.jpg", "files": 1}]


def test_without_delete_the_remote_keeps_removed_files():
    prev = [f("a"), f("b")]
    assert plan_for([f("a")], prev, remote_copy(prev), delete=False).ops == []


def test_deleted_directory_is_one_delete_children_counted():
    prev = [f("keep"), d("gone"), d("gone/sub"), f("gone/sub/1"), f("gone/2")]
    got = ops(plan_for([f("keep")], prev, remote_copy(prev)))
    assert got == [{"op": "delete", "kind": "dir", "path": "gone", "files": 2}]


def test_remote_drift_is_repaired():
    prev = [f("a"), f("b")]
    rem = [Entry("a", FILE, 1, 10), Entry("b", FILE, 999, 10)]  # b altered on the remote, c lost
    got = ops(plan_for(prev, prev, rem))
    assert got == [{"op": "upload", "path": "b", "size": 1, "reason": "changed"}]


def test_moved_file_is_not_trusted_when_remote_copy_differs():
    prev = [f("a", 5, 10, inode=1)]
    cur = [f("b", 5, 10, inode=1)]
    rem = [Entry("a", FILE, 6, 10)]  # the remote copy is not what we sent
    got = ops(plan_for(cur, prev, rem))
    assert {"op": "upload", "path": "b", "size": 5, "reason": "new"} in got


def test_move_by_content_hash_when_inode_changed():
    prev = [f("a", 5, 10, inode=1, h=b"H" * 16)]
    cur = [f("b", 5, 10, inode=2, h=b"H" * 16)]
    assert ops(plan_for(cur, prev, remote_copy(prev)))[0]["op"] == "move"


def test_excluded_remote_files_are_left_alone():
    prev = [f("a")]
    rem = remote_copy(prev) + [Entry("cache.tmp", FILE, 1, 1)]
    changes = merge(ordered(prev), ordered(prev), ordered(rem), Excludes(["*.tmp"]))
    assert make_plan(changes, CAPS, delete=True).ops == []


def test_s3_like_remote_needs_no_folder_ops():
    cur = [d("a"), d("a/empty"), f("a/x")]
    got = ops(plan_for(cur, [], [], caps=S3_LIKE))
    assert got == [{"op": "upload", "path": "a/x", "size": 1, "reason": "new"}]


def test_s3_like_remote_dir_rename_is_one_move():
    old = [d("p")] + [f(f"p/{i}", inode=10 + i) for i in range(5)]
    new = [d("q")] + [f(f"q/{i}", inode=10 + i) for i in range(5)]
    rem = list(with_implied_dirs(ordered([e for e in remote_copy(old) if e.kind == FILE])))
    changes = merge(ordered(new), ordered(old), rem, Excludes())
    got = ops(make_plan(changes, S3_LIKE, True))
    assert got == [{"op": "move", "kind": "dir", "from": "p", "to": "q", "files": 5}]


def test_sort_order_puts_dash_before_children():
    keys = [entry_key(e) for e in ordered([d("a"), f("a-b"), f("a/x"), f("a0")])]
    assert keys == [b"a-b", b"a/", b"a/x", b"a0"]


def test_move_onto_an_existing_file_replaces_it_and_deletes_nothing():
    prev = [f("a", 1, 10, inode=1, h=b"A"), f("b", 2, 20, inode=2, h=b"B")]
    cur = [f("b", 1, 10, inode=1, h=b"A")]
    got = ops(plan_for(cur, prev, remote_copy(prev)))
    assert got == [{"op": "move", "kind": "file", "from": "a", "to": "b", "files": 1}]


def test_backup_dir_marks_what_is_overwritten_or_deleted():
    from reconcile.plan import keep_copies

    prev = [f("a", 1, 10, inode=1, h=b"A"), f("b", 2, 20, inode=2), f("c", 3, 30, inode=3), f("d", 1, 1, inode=4)]
    cur = [f("b", 1, 10, inode=1, h=b"A"), f("c", 4, 40, inode=3), f("e", 1, 1, inode=5)]
    plan = plan_for(cur, prev, remote_copy(prev))
    keep_copies(plan, ".trash/RUN")
    got = {(o["op"], o.get("path", o.get("to"))): o.get("backup") for o in ops(plan)}
    assert got == {("move", "b"): ".trash/RUN/b", ("upload", "c"): ".trash/RUN/c",
                   ("upload", "e"): None, ("delete", "d"): ".trash/RUN/d"}


def test_unsafe_remote_names_are_recognised():
    from reconcile.entry import is_safe_path

    assert is_safe_path("a/b c/d.txt") and is_safe_path("..hidden") and is_safe_path("a\\b")
    for bad in ["", "/etc/passwd", "../x", "a/../../b", "a//b", "a/./b", "a/", "nul\0byte"]:
        assert not is_safe_path(bad), bad
