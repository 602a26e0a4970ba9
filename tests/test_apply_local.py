"""End to end against a local folder: the contract users and scripts rely on."""

from __future__ import annotations

import json
import os
import shutil
import stat
import unicodedata
from pathlib import Path

import pytest

from tests.cli import reconcile
from tests.mirror import tree, write
from tests.state_owner import take_state_back


@pytest.fixture
def pair(tmp_path):
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    src.mkdir()
    dst.mkdir()
    return src, dst, state


def test_first_sync_then_nothing_to_do(pair):
    src, dst, state = pair
    for i in range(20):
        write(src / f"d{i % 3}" / f"f{i}", os.urandom(i * 10), 1_600_000_000_000_000_000 + i)
    reconcile("apply", src, dst, "--state-dir", state, check=0)
    assert tree(dst) == tree(src)
    p = reconcile("plan", src, dst, "--state-dir", state, "--json", check=0)
    doc = json.loads(p.stdout)
    assert doc["operations"] == []
    assert "nothing to do" in p.stderr


def test_directory_rename_of_1000_files_moves_once_and_sends_nothing(pair):
    src, dst, state = pair
    for i in range(1000):
        write(src / "album" / f"{i:04}.jpg", b"x" * 100, 1_600_000_000_000_000_000)
    reconcile("apply", src, dst, "--state-dir", state, check=0)
    (src / "album").rename(src / "album-2026")
    doc = json.loads(reconcile("plan", src, dst, "--state-dir", state, "--json", check=0).stdout)
    assert doc["operations"] == [{"op": "move", "kind": "dir", "from": "album", "to": "album-2026", "files": 1000}]
    assert doc["summary"]["upload"] == {"count": 0, "bytes": 0}
    out = json.loads(reconcile("apply", src, dst, "--state-dir", state, "--json", check=0).stdout)
    assert out["operations"][0]["result"] == "done"
    assert out["summary"]["upload"]["bytes"] == 0
    assert tree(dst) == tree(src)


def test_json_contract(pair):
    src, dst, state = pair
    write(src / "a" / "b.jpg", b"123", 1_600_000_000_000_000_000)
    write(src / "gone", b"1", 1_600_000_000_000_000_000)
    write(src / "keep", b"1", 1_600_000_000_000_000_000)
    write(src / "keep2", b"1", 1_600_000_000_000_000_000)
    reconcile("apply", src, dst, "--state-dir", state, check=0)
    (src / "gone").unlink()
    (src / "a").rename(src / "c")
    write(src / "new.txt", b"hello", 1_600_000_000_000_000_000)
    doc = json.loads(reconcile("plan", src, dst, "--state-dir", state, "--delete", "--json", check=0).stdout)
    assert doc["source"] == str(src) and doc["dest"] == str(dst)
    assert doc["operations"] == [
        {"op": "move", "kind": "dir", "from": "a", "to": "c", "files": 1},
        {"op": "upload", "path": "new.txt", "size": 5, "reason": "new"},
        {"op": "delete", "kind": "file", "path": "gone"},
    ]
    assert doc["summary"]["upload"] == {"count": 1, "bytes": 5}
    assert doc["summary"]["move"]["count"] == 1 and doc["summary"]["move"]["files"] == 1
    assert doc["summary"]["delete"]["count"] == 1
    out = json.loads(reconcile("apply", src, dst, "--state-dir", state, "--delete", "--json", check=0).stdout)
    assert [o["result"] for o in out["operations"]] == ["done", "done", "done"]
    assert out["totals"] == {"done": 3, "skipped": 0, "failed": 0, "bytes_sent": 5,
                             "bytes_saved": {"move": 3, "touch": 0, "delta": 0}}
    assert tree(dst) == tree(src)


def test_plan_changes_nothing(pair):
    src, dst, state = pair
    write(src / "x", b"1", 1_600_000_000_000_000_000)
    reconcile("plan", src, dst, "--state-dir", state, check=0)
    assert tree(dst) == {}
    assert not (state / "snapshot.msgpack").exists()


def test_missing_source_is_refused(pair, tmp_path):
    _, dst, state = pair
    write(dst / "precious", b"1", 1)
    p = reconcile("apply", tmp_path / "not-mounted", dst, "--state-dir", state, "--delete", check=4)
    assert "does not exist" in p.stderr
    assert (dst / "precious").exists()


def test_source_that_is_a_file_is_refused(pair, tmp_path):
    _, dst, state = pair
    (tmp_path / "afile").write_text("x")
    reconcile("apply", tmp_path / "afile", dst, "--state-dir", state, check=4)


def test_empty_source_is_refused_unless_allowed(pair):
    src, dst, state = pair
    write(dst / "precious", b"1", 1)
    p = reconcile("apply", src, dst, "--state-dir", state, "--delete", check=4)
    assert "--allow-empty-source" in p.stderr
    assert (dst / "precious").exists()
    reconcile("apply", src, dst, "--state-dir", state, "--delete", "--allow-empty-source", "--max-delete", "5", check=0)
    assert not (dst / "precious").exists()


def test_delete_guard_refuses_more_than_half(pair):
    src, dst, state = pair
    for i in range(10):
        write(src / f"f{i}", b"1", 1_600_000_000_000_000_000)
    reconcile("apply", src, dst, "--state-dir", state, check=0)
    for i in range(6):
        (src / f"f{i}").unlink()
    p = reconcile("apply", src, dst, "--state-dir", state, "--delete", check=4)
    assert "--max-delete 6" in p.stderr
    assert len(tree(dst)) == 10
    reconcile("apply", src, dst, "--state-dir", state, "--delete", "--max-delete", "5", check=4)
    reconcile("apply", src, dst, "--state-dir", state, "--delete", "--max-delete", "6", check=0)
    assert tree(dst) == tree(src)


def test_lock_contention_exits_5(pair):
    import fcntl

    src, dst, state = pair
    write(src / "x", b"1", 1)
    state.mkdir()
    with open(state / "lock", "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        p = reconcile("apply", src, dst, "--state-dir", state, check=5)
        assert "another reconcile run" in p.stderr
    # released (as when the holder dies): the next run takes it over
    reconcile("apply", src, dst, "--state-dir", state, check=0)


def test_corrupt_snapshot_causes_no_deletion(pair):
    src, dst, state = pair
    for i in range(4):
        write(src / f"f{i}", b"1", 1_600_000_000_000_000_000)
    reconcile("apply", src, dst, "--state-dir", state, check=0)
    snap = state / "snapshot.msgpack"
    data = bytearray(snap.read_bytes())
    data[len(data) // 2] ^= 0xFF
    snap.write_bytes(bytes(data))
    p = reconcile("apply", src, dst, "--state-dir", state, "--delete", check=0)
    assert "ignoring the previous snapshot" in p.stderr
    assert tree(dst) == tree(src)


def test_state_files_are_private(pair):
    src, dst, state = pair
    write(src / "x", b"1", 1)
    reconcile("apply", src, dst, "--state-dir", state, check=0)
    for name in ("snapshot.msgpack", "lock", "last-run.json"):
        assert stat.S_IMODE(os.stat(state / name).st_mode) == 0o600, name


def test_odd_names_round_trip(pair):
    src, dst, state = pair
    names = [b"caf\xe9-latin1", b"with space", b"new\nline", b"x" * 255,
             unicodedata.normalize("NFC", "é").encode(), unicodedata.normalize("NFD", "é").encode(),
             b"back\\slash", b" lead and trail "]
    for n in names:
        p = os.path.join(os.fsencode(src), b"d", n)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as fh:
            fh.write(n)
    reconcile("apply", src, dst, "--state-dir", state, check=0)
    assert tree(dst) == tree(src)
    assert json.loads(reconcile("plan", src, dst, "--state-dir", state, "--json", check=0).stdout)["operations"] == []
    os.rename(os.path.join(os.fsencode(src), b"d"), os.path.join(os.fsencode(src), b"\xff-dir"))
    doc = json.loads(reconcile("plan", src, dst, "--state-dir", state, "--json", check=0).stdout)
    assert [o["op"] for o in doc["operations"]] == ["move"]
    reconcile("apply", src, dst, "--state-dir", state, "--delete", check=0)
    assert tree(dst) == tree(src)


def test_symlinks_and_fifos_are_skipped_and_reported(pair):
    src, dst, state = pair
    write(src / "real", b"1", 1)
    os.symlink("real", src / "link")
    os.mkfifo(src / "pipe")
    p = reconcile("apply", src, dst, "--state-dir", state, check=0)
    assert "1 symlink skipped;" in p.stderr and "pipe" in p.stderr
    assert set(tree(dst)) == {"real"}


def test_exclude_patterns(pair):
    src, dst, state = pair
    write(src / "keep.txt", b"1", 1)
    write(src / "build" / "out.o", b"1", 1)
    write(src / "a" / "x.tmp", b"1", 1)
    write(dst / "remote-only.tmp", b"1", 1)
    reconcile("apply", src, dst, "--state-dir", state, "--exclude", "build/", "--exclude", "*.tmp",
              "--delete", check=0)
    assert set(tree(dst)) == {"keep.txt", "a", "remote-only.tmp"}


def test_unreadable_directory_keeps_its_remote_copy():
    import tempfile

    tmp_path = Path(tempfile.mkdtemp(prefix="reconcile-nobody-"))  # pytest's tmp is closed to nobody
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src / "open" / "a", b"1", 1)
    write(src / "secret" / "b", b"2", 1)
    reconcile("apply", src, dst, "--state-dir", state, check=0)
    for root, dirs, files in os.walk(tmp_path):
        os.chmod(root, 0o777)
        for n in files:
            os.chmod(os.path.join(root, n), 0o666)
    os.chmod(src / "secret", 0o000)
    p = run_as_nobody(src, dst, state)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["complete"] and any("secret" in u for u in report["unreadable"])
    assert (dst / "secret" / "b").read_bytes() == b"2"
    assert (dst / "open" / "a").read_bytes() == b"1"
    os.chmod(src / "secret", 0o700)
    shutil.rmtree(tmp_path)


def run_as_nobody(src, dst, state):
    """root reads everything, so the run drops to nobody once its modules are
    imported (our interpreter's site-packages may be closed to nobody)."""
    import subprocess
    import sys

    code = f"""
import json, os, sys
import reconcile.remotes.local
from reconcile.engine import Run, RunOptions
from tests.mirror import SilentReporter
from tests.state_owner import give_state_to_nobody
give_state_to_nobody({str(state)!r})
os.setgroups([]); os.setgid(65534); os.setuid(65534)
r = Run({str(src)!r}, {str(dst)!r}, RunOptions(delete=True, state_dir={str(state)!r}), SilentReporter())
res = r.apply()
print(json.dumps({{"complete": res.outcome.complete, "unreadable": res.walk.unreadable}}))
"""
    repo = str(Path(__file__).resolve().parent.parent)
    try:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo)
    finally:
        take_state_back(state)


def test_dest_inside_source_is_refused(pair):
    src, _, state = pair
    write(src / "x", b"1", 1)
    p = reconcile("apply", src, src / "backup", "--state-dir", state, check=2)
    assert "overlap" in p.stderr


def test_bad_flag_is_a_usage_error(pair):
    src, dst, _ = pair
    reconcile("apply", src, dst, "--no-such-flag", check=2)
    reconcile("apply", src, "ftp://host/x", check=2)


def test_unreadable_source_root_is_refused_even_when_empty_sources_are_allowed():
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="reconcile-nobody-"))
    src, dst, state = base / "src", base / "dst", base / "state"
    write(src / "a", b"1", 1)
    reconcile("apply", src, dst, "--state-dir", state, check=0)
    for root, dirs, files in os.walk(base):
        os.chmod(root, 0o777)
        for n in files:
            os.chmod(os.path.join(root, n), 0o666)
    os.chmod(src, 0o000)
    code = f"""
import os, sys
import reconcile.remotes.local
from reconcile.engine import Run, RunOptions
from reconcile.errors import SafetyRefusal
from tests.mirror import SilentReporter
os.setgroups([]); os.setgid(65534); os.setuid(65534)
try:
    Run({str(src)!r}, {str(dst)!r}, RunOptions(delete=True, allow_empty_source=True, state_dir={str(state)!r}),
        SilentReporter()).apply()
except SafetyRefusal as exc:
    print("refused:", exc)
"""
    import subprocess
    import sys

    repo = str(Path(__file__).resolve().parent.parent)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo)
    assert "refused: cannot read source" in p.stdout, p.stdout + p.stderr
    assert (dst / "a").read_bytes() == b"1"
    os.chmod(src, 0o700)
    shutil.rmtree(base)
