"""Names on a real exFAT disk (tests/servers_usb.py), through the real command
line: case-only renames reach the disk, two names that differ only in case
are a reported collision (nothing merged, nothing of the other deleted),
forbidden names are reported with the reason and the rest goes on, and
--name-encoding stores them as rclone does and restore maps them back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from reconcile.names import FORBIDDEN, decode_name, encode_name, name_problem
from tests.cli import reconcile
from tests.mirror import write

T0 = 1_600_000_001_523_456_789


def apply(src, dst, state, *args, check=0):
    return reconcile("apply", src, dst, "--state-dir", state, *args, check=check)


def plan_json(src, dst, state, *args) -> dict:
    return json.loads(reconcile("plan", src, dst, "--state-dir", state, "--json", *args, check=0).stdout)


@pytest.fixture
def usb(exfat_disk, tmp_path):
    return tmp_path / "src", exfat_disk.fresh_folder(), tmp_path / "state"


def test_case_only_rename_of_a_file_and_a_folder_reaches_the_disk(usb):
    src, dst, state = usb
    write(src / "Readme.md", b"read me", T0)
    write(src / "photos" / "a.jpg", b"jpg", T0)
    apply(src, dst, state, "--delete")
    (src / "Readme.md").rename(src / "README.md")
    (src / "photos").rename(src / "Photos")
    apply(src, dst, state, "--delete")
    assert sorted(os.listdir(dst)) == ["Photos", "README.md"]
    assert (dst / "README.md").read_bytes() == b"read me"
    assert os.listdir(dst / "Photos") == ["a.jpg"]
    assert plan_json(src, dst, state, "--delete")["operations"] == []


def test_case_only_rename_without_a_snapshot_still_reaches_the_disk(usb, tmp_path):
    src, dst, state = usb
    write(src / "Readme.md", b"read me", T0)
    apply(src, dst, state, "--delete")
    (src / "Readme.md").rename(src / "README.md")
    apply(src, dst, tmp_path / "fresh-state", "--delete")
    assert os.listdir(dst) == ["README.md"]


def test_two_names_one_on_the_disk_are_a_collision_reported_once(usb):
    src, dst, state = usb
    write(src / "docs2" / "x", b"lower x", T0)
    write(src / "DOCS2" / "y", b"upper y", T0)
    write(src / "other.txt", b"other", T0)
    p = apply(src, dst, state, check=3)
    assert p.stderr.count("differ only in case") == 1, p.stderr
    assert "DOCS2" in p.stderr and "docs2" in p.stderr
    # one folder on the disk, holding one side only: nothing merged
    assert sorted(os.listdir(dst)) == ["DOCS2", "other.txt"]
    assert os.listdir(dst / "DOCS2") == ["y"]
    # and so on every run, with --delete too
    again = apply(src, dst, state, "--delete", check=3)
    assert "differ only in case" in again.stderr
    assert sorted(os.listdir(dst)) == ["DOCS2", "other.txt"] and os.listdir(dst / "DOCS2") == ["y"]


def test_a_new_spelling_beside_a_stored_one_leaves_the_stored_files_alone(usb):
    """docs2/x is on the disk; DOCS2/y appears: the disk keeps docs2 with x, under --delete too"""
    src, dst, state = usb
    write(src / "docs2" / "x", b"lower x", T0)
    apply(src, dst, state, "--delete")
    write(src / "DOCS2" / "y", b"upper y", T0)
    write(src / "docs2" / "x", b"lower x, changed", T0 + 10**9)
    p = apply(src, dst, state, "--delete", check=3)
    assert "DOCS2 is left out" in p.stderr, p.stderr
    assert os.listdir(dst) == ["docs2"]
    assert os.listdir(dst / "docs2") == ["x"]
    assert (dst / "docs2" / "x").read_bytes() == b"lower x, changed"


def test_two_files_differing_in_case_keep_their_own_content(usb):
    src, dst, state = usb
    write(src / "photo.jpg", b"first", T0)
    write(src / "Photo.JPG", b"second", T0)
    apply(src, dst, state, check=3)
    before = {n: (dst / n).read_bytes() for n in os.listdir(dst)}
    assert len(before) == 1
    apply(src, dst, state, "--delete", check=3)
    assert {n: (dst / n).read_bytes() for n in os.listdir(dst)} == before  # not overwritten by the other


FORBIDDEN_NAMES = {
    "a:b.txt": "':' is not allowed in names",
    "what?.txt": "'?' is not allowed in names",
    "star*.txt": "'*' is not allowed in names",
    'quote".txt': "'\"' is not allowed in names",
    "lt<.txt": "'<' is not allowed in names",
    "gt>.txt": "'>' is not allowed in names",
    "pipe|.txt": "'|' is not allowed in names",
    "back\\slash.txt": "'\\' is not allowed in names",
    "ctl\x01.txt": "the control character U+0001 is not allowed in names",
    "dot.": "a name cannot end with a dot",
    "space ": "a name cannot end with a space",
    "CON": "'CON' is a reserved device name on Windows",
    "nul.txt": "'NUL' is a reserved device name on Windows",
    "COM1": "'COM1' is a reserved device name on Windows",
}


def test_each_forbidden_name_is_reported_with_its_reason_and_the_rest_goes_on(usb):
    src, dst, state = usb
    for name in FORBIDDEN_NAMES:
        write(src / "Docs" / name, b"data", T0)
    write(src / "Docs" / "fine.txt", b"fine", T0)
    write(src / "bad:folder" / "inside.txt", b"inside", T0)
    p = apply(src, dst, state, check=3)
    for name, reason in FORBIDDEN_NAMES.items():
        if name == "ctl\x01.txt":
            name = "ctl?.txt"  # the report shows control characters as '?' (report.printable)
        mendable = "reserved" not in reason and "longer" not in reason
        advice = "rename it, or use --name-encoding" if mendable else "rename it"
        line = f"cannot store Docs/{name} on this destination (exfat): {reason}; {advice}"
        assert p.stderr.count(line) == 1 or (name.startswith("ctl") and "U+0001" in p.stderr), (line, p.stderr)
    # a folder it cannot hold: one message, not one per file inside
    assert p.stderr.count("bad:folder") == 1
    assert "15 not stored" in p.stderr.splitlines()[-1]
    assert sorted(os.listdir(dst / "Docs")) == ["fine.txt"]
    doc = plan_json(src, dst, state)
    assert {d["path"] for d in doc["not_stored"]} >= {"Docs/a:b.txt", "bad:folder"}
    assert len(doc["not_stored"]) == 15
    # no write was tried: the disk's own 'No such file or directory' never shows
    assert "No such file" not in p.stderr


def test_name_encoding_stores_rclone_names_and_restore_maps_them_back(usb, tmp_path):
    src, dst, state = usb
    names = [n for n, why in FORBIDDEN_NAMES.items() if "reserved" not in why and "longer" not in why]
    names += ["a：b full-width already.txt", "‛quote-mark.txt", "plain.txt"]
    for i, name in enumerate(names):
        write(src / "Docs" / name, name.encode(), T0 + i)
    doc = plan_json(src, dst, state, "--name-encoding")
    stored = {o["path"]: o.get("stored") for o in doc["operations"]}
    assert stored["Docs/a:b.txt"] == "Docs/a：b.txt"
    assert stored["Docs/plain.txt"] is None
    apply(src, dst, state, "--name-encoding")
    on_disk = set(os.listdir(dst / "Docs"))
    assert {"a：b.txt", "what？.txt", "dot．", "space␠", "ctl␁.txt", "back＼slash.txt",
            "a‛：b full-width already.txt", "‛‛quote-mark.txt", "plain.txt"} <= on_disk
    assert len(on_disk) == len(names)
    assert plan_json(src, dst, state, "--name-encoding")["operations"] == []
    v = reconcile("verify", src, dst, "--state-dir", state, "--name-encoding", "--json", check=0)
    assert json.loads(v.stdout)["differences"] == []
    out = tmp_path / "restored"
    reconcile("restore", dst, out, "--name-encoding", check=0)
    assert sorted(os.listdir(out / "Docs")) == sorted(names)
    for name in names:
        assert (out / "Docs" / name).read_bytes() == name.encode()


@given(st.text(min_size=1, max_size=40).filter(lambda s: "/" not in s and s not in (".", "..")))
def test_name_encoding_round_trips_and_leaves_nothing_forbidden(name):
    stored = encode_name(name)
    assert decode_name(stored) == name
    assert not any(c in FORBIDDEN or ord(c) < 0x20 for c in stored)
    assert not stored.endswith((".", " "))
    problem = name_problem(name, encoding=True)
    assert problem is None or "reserved" in problem or "longer" in problem


def test_names_over_255_utf16_units():
    """a Linux name holds 255 bytes, never over 255 UTF-16 units; the mapping can
    make one longer (each byte that is not UTF-8 becomes three characters)"""
    assert name_problem("x" * 256, encoding=False) == "the name is longer than 255 UTF-16 units"
    assert name_problem("\U0001F600" * 128, encoding=False) is not None  # 2 units each
    assert name_problem("é" * 255, encoding=False) is None
    assert name_problem(os.fsdecode(b"\xff" * 100), encoding=True) == "the name is longer than 255 UTF-16 units"


def test_rclone_spellings():
    """what rclone's local backend on Windows writes for the same names (lib/encoder)"""
    assert encode_name('a:b?c*d"e<f>g|h\\i') == "a：b？c＊d＂e＜f＞g｜h＼i"
    assert encode_name("end.") == "end．" and encode_name("end ") == "end␠"
    assert encode_name("a：b") == "a‛：b" and encode_name("tab\there") == "tab␉here"
    assert encode_name(os.fsdecode(b"bad\xff")) == "bad‛FF"
    assert decode_name("a‛") == "a‛"


def test_a_file_over_the_fat32_limit_is_left_out_once_with_the_limit_named():
    """a pure test: no FAT32 disk can be mounted here (no vfat in this kernel,
    fusefat does not mount), so the limit comes from the capabilities the
    probe gives a vfat mount"""
    from reconcile.diff import Changes, Stale
    from reconcile.entry import FILE, Entry
    from reconcile.names import refusals
    from reconcile.remotes.base import Capabilities

    caps = Capabilities(fs_type="vfat", windows_names=True, case_insensitive=True, max_file_size=(1 << 32) - 1)
    big = Entry("iso/big.iso", FILE, (1 << 32) + 1, T0)
    fits = Entry("iso/fits.iso", FILE, (1 << 32) - 1, T0)
    changes = Changes(needed={e.path: e for e in (big, fits)},
                      stale={"iso/big.iso": Stale(Entry("iso/big.iso", FILE, 100, T0 - 10**9), None, displaced=True)})
    out = refusals(changes, caps, encoding=False, collisions=[])
    assert out == [("iso/big.iso", "cannot store iso/big.iso on this destination (vfat): it is 4,294,967,297 bytes, over the "
                    "FAT32 file size limit of 4,294,967,295 bytes (4 GiB - 1); use a disk formatted exFAT or NTFS, "
                    "or exclude it")]
    assert list(changes.needed) == ["iso/fits.iso"]
    assert changes.stale == {}  # the older copy on the disk stays; nothing deletes it


def test_collision_watch_finds_case_twins_per_folder_only():
    from reconcile.entry import DIR, FILE
    from reconcile.names import CollisionWatch

    listed = [("DOCS2", DIR), ("DOCS2/y", FILE), ("a", FILE), ("docs2", DIR), ("docs2/x", FILE), ("A", FILE),
              ("é", DIR), ("É", DIR), ("straße", FILE), ("STRASSE", FILE), ("x", DIR), ("x/a", FILE), ("y", DIR),
              ("y/A", FILE)]
    rows = sorted(((p + "/" if k == DIR else p).encode(), k) for p, k in listed)
    watch = CollisionWatch()
    assert list(watch.rows(rows)) == rows  # every row passes through
    assert sorted(watch.groups.values()) == [["A", "a"], ["DOCS2", "docs2"], ["É", "é"]]


def test_folder_renamed_in_case_with_a_changed_file_inside_keeps_the_new_file(usb):
    """found by the mirror property on exFAT: the stale 'a/' was deleted whole
    after 'A/a' was written into it, taking the new file with it"""
    src, dst, state = usb
    write(src / "a" / "a", b"one", T0)
    write(src / "a" / "gone", b"gone", T0)
    apply(src, dst, state, "--delete")
    write(src / "a" / "a", b"two, longer", T0 + 10**9)
    (src / "a" / "gone").unlink()
    (src / "a").rename(src / "A")
    p = apply(src, dst, state, "--delete")
    assert os.listdir(dst) == ["A"]
    assert os.listdir(dst / "A") == ["a"]
    assert (dst / "A" / "a").read_bytes() == b"two, longer"
    assert plan_json(src, dst, state, "--delete")["operations"] == [], p.stderr


def test_folder_that_became_a_file_of_another_case(usb):
    src, dst, state = usb
    write(src / "a" / "a", b"in a folder", T0)
    apply(src, dst, state, "--delete")
    (src / "a" / "a").unlink()
    (src / "a").rmdir()
    write(src / "A", b"now a file", T0)
    write(src / "other", b"other", T0)
    apply(src, dst, state, "--delete", "--max-delete", "1")
    assert sorted(os.listdir(dst)) == ["A", "other"] and (dst / "A").read_bytes() == b"now a file"
    assert plan_json(src, dst, state, "--delete")["operations"] == []


def test_links_store_onto_exfat_reports_each_symlink_it_cannot_hold(usb):
    src, dst, state = usb
    write(src / "real.txt", b"real", T0)
    os.symlink("real.txt", src / "link")
    p = apply(src, dst, state, "--links", "store", check=3)
    assert ("cannot store the symlink link on this destination (exfat): it cannot hold symlinks; "
            "use --links follow to copy what it points to, or --links skip") in p.stderr
    assert os.listdir(dst) == ["real.txt"]
