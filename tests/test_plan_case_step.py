"""The planner and the merge on a USB disk's terms, with no I/O: moves on a
case-insensitive disk (exFAT) where another spelling of the target is in
use, and a source file that changed within the remote's mtime step. Both
shapes were found by test_usb_mirror_property on real exFAT and NTFS."""

from __future__ import annotations

from reconcile.remotes.base import Capabilities
from tests.test_plan import d, f, ops, plan_for, remote_copy

SEC = 1_000_000_000
EXFAT = Capabilities(case_insensitive=True, mtime_precision_ns=SEC)
NTFS = Capabilities(mtime_precision_ns=100)


def test_a_file_moved_onto_the_case_twin_of_a_stale_folder_clears_the_folder_first():
    prev = [f("a", inode=1), d("b"), f("b/a", inode=2)]
    cur = [f("B", inode=1), f("a", 10, inode=3)]  # a renamed B, the folder b gone, a new a
    got = ops(plan_for(cur, prev, remote_copy(prev), caps=EXFAT))
    assert got[:2] == [{"op": "delete", "kind": "dir", "path": "b", "files": 1, "reason": "replaced"},
                       {"op": "move", "kind": "file", "from": "a", "to": "B", "files": 1}]
    assert got[2:] == [{"op": "upload", "path": "a", "size": 10, "reason": "new"}]


def test_a_move_onto_a_case_twin_waits_until_that_file_has_moved_away():
    prev = [f("b", inode=1), f("x", 2, inode=2)]
    cur = [f("y", inode=1), f("B", 2, inode=2)]  # b -> y, then x -> B; the other order overwrites b
    got = ops(plan_for(cur, prev, remote_copy(prev), caps=EXFAT))
    assert got == [{"op": "move", "kind": "file", "from": "b", "to": "y", "files": 1},
                   {"op": "move", "kind": "file", "from": "x", "to": "B", "files": 1}]


def test_a_file_moved_under_a_folder_spelled_like_itself_goes_through_a_temp_name():
    prev = [f("a", inode=1)]
    cur = [d("A"), f("A/x", inode=1)]  # on exFAT 'A' is the file 'a' until it has moved away
    got = ops(plan_for(cur, prev, remote_copy(prev), caps=EXFAT))
    assert [(o["from"], o["to"]) for o in got if o["op"] == "move"] == [
        ("a", got[0]["to"]), (got[0]["to"], "A/x")]
    assert got[0]["to"].startswith(".reconcile-tmp-move-")


def stored(entries, step):
    """the remote copy as a disk of this mtime step keeps it"""
    return [e.__class__(e.path, e.kind, e.size, e.mtime_ns // step * step) for e in remote_copy(entries)]


def test_a_same_size_edit_within_the_remote_mtime_step_is_sent_once():
    t = 1_600_000_001 * SEC
    for caps in (EXFAT, NTFS):
        prev = [f("a", 5, t + 7, inode=1)]
        rem = stored(prev, caps.mtime_precision_ns)
        edited = [f("a", 5, t + 14, inode=2)]  # another file swapped in, its time in the same step
        assert ops(plan_for(edited, prev, rem, caps=caps)) == [
            {"op": "upload", "path": "a", "size": 5, "reason": "changed"}]
        # once sent, the snapshot holds the new time: nothing more to do
        assert plan_for(edited, edited, stored(edited, caps.mtime_precision_ns), caps=caps).ops == []
        # and a file that did not change is not sent for the step alone
        assert plan_for(prev, prev, rem, caps=caps).ops == []
