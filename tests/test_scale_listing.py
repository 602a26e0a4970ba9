"""The fast paths of a no-change run: rows instead of Entries, the quick path
of the merge, and the local listing in a forked child process. Each must give
exactly what the plain path gives, and fail the same way."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from reconcile import diff, forked
from reconcile.diff import Changes, merge, merge_rows
from reconcile.engine import Run, RunOptions
from reconcile.entry import DIR, FILE, LINK, TEMP_MARK, Entry, entry_key, entry_of, row_of
from reconcile.errors import NotFound, Permanent, Transient
from reconcile.excludes import Excludes
from reconcile.remotes import local
from reconcile.remotes.local import LocalRemote
from reconcile.walk import WalkReport, walk, walk_rows
from tests.cli import reconcile
from tests.mirror import write

T0 = 1_700_000_000_000_000_000
needs_fork = pytest.mark.skipif(not forked.available(), reason="the forked listing is Linux-only")


class Quiet:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def __getattr__(self, name):
        return lambda *a, **kw: None


def odd_tree(root: Path) -> None:
    """names that trip up encoders and sorters, symlinks, an empty folder, our temp names."""
    nfc = unicodedata.normalize("NFC", "café")
    nfd = unicodedata.normalize("NFD", "café")
    for rel in ("a/x", "a-b", "a0", "a/b/c", "line\nbreak", f"{nfc}/1", f"{nfd}/2", "sp ace", "Z", "z",
                f"d/{TEMP_MARK}half"):
        write(root / rel, rel.encode(), T0)
    raw = os.fsencode(root) + b"/bad-\xff\xfe"
    with open(raw, "wb") as f:
        f.write(b"not utf-8")
    os.utime(raw, ns=(T0, T0))
    (root / "empty").mkdir()
    os.symlink("a/x", root / "link")
    os.symlink("missing", root / "dangling")


@needs_fork
def test_forked_listing_is_the_listing(tmp_path):
    odd_tree(tmp_path)
    remote = LocalRemote(str(tmp_path))
    forked_rows = list(remote.list_rows(fork=True))
    assert forked_rows == list(remote.list_rows(fork=False))
    assert forked_rows == [row_of(e) for e in remote.list()]
    keys = [r[0] for r in forked_rows]
    assert keys == sorted(keys) and len(keys) == len(set(keys))
    assert not any(TEMP_MARK.encode() in k for k in keys)
    assert {entry_of(r).path for r in forked_rows} >= {"line\nbreak", "bad-\udcff\udcfe", "link"}


def test_rows_and_entries_agree_on_the_source_walk(tmp_path):
    odd_tree(tmp_path)
    for links in ("skip", "store", "follow"):
        rows = list(walk_rows(str(tmp_path), Excludes(), WalkReport(), links))
        entries = list(walk(str(tmp_path), Excludes(), WalkReport(), links))
        assert [entry_of(r) for r in rows] == entries
        assert [r[0] for r in rows] == [entry_key(e) for e in entries] == sorted(r[0] for r in rows)
    kinds = {e.path: e.kind for e in walk(str(tmp_path), Excludes(), WalkReport(), "store")}
    assert kinds["link"] == LINK and kinds["empty"] == DIR and kinds["bad-\udcff\udcfe"] == FILE


def _reference(cur, prev, rem, excludes, precision_ns=1):
    """every key through the one-key rules, no quick path: the merge as it was."""
    changes = Changes()
    streams = [sorted(map(row_of, s)) for s in (cur, prev, rem)]
    keys = sorted({r[0] for s in streams for r in s})
    by_key = [{r[0]: r for r in s} for s in streams]
    unreadable = [None]
    for key in keys:
        c, p, r = (entry_of(m[key]) if key in m else None for m in by_key)
        diff._merge_key(c, p, r, changes, unreadable, excludes, precision_ns, False, None, None, False)
    return changes


def _same(a: Changes, b: Changes) -> None:
    assert (a.local_files, a.local_dirs, a.remote_files, a.unchanged, a.skipped_unreadable) == \
        (b.local_files, b.local_dirs, b.remote_files, b.unchanged, b.skipped_unreadable)
    assert a.needed == b.needed
    assert {k: (s.remote, s.prev, s.displaced) for k, s in a.stale.items()} == \
        {k: (s.remote, s.prev, s.displaced) for k, s in b.stale.items()}


@pytest.mark.parametrize("seed", range(30))
def test_quick_path_changes_nothing_in_the_merge(seed):
    rnd = random.Random(seed)
    names = ["a", "a-b", "a/x", "a/y", "a0", "b", "b/c", "b/c/d", "é", f"{TEMP_MARK}t", "skip.tmp", "trash",
             "trash/old"]
    dirs = {"a", "b", "b/c", "trash"}

    def some(with_error: bool = False) -> list[Entry]:
        out = []
        for n in names:
            if rnd.random() < 0.75:
                kind = DIR if n in dirs and rnd.random() < 0.9 else rnd.choice([FILE, FILE, LINK])
                e = Entry(n, kind, 0 if kind != FILE else rnd.choice([1, 2]), rnd.choice([T0, T0, T0 + 7, None]),
                          rnd.randrange(3), 1, 0o644, target="t" if kind == LINK else None)
                if with_error and kind == DIR and rnd.random() < 0.2:
                    e.error = "Permission denied"
                out.append(e)
        return sorted(out, key=entry_key)

    excludes = Excludes(["*.tmp"] if seed % 2 else [], protected=["trash"])
    cur, prev, rem = some(True), some(), some()
    for precision in (1, 1_000_000_000):
        want = _reference(cur, prev, rem, excludes, precision)
        _same(merge(cur, prev, rem, excludes, precision), want)


@needs_fork
def test_forked_listing_error_is_the_same_error_at_the_same_point(tmp_path, monkeypatch):
    for rel in ("a/1", "b/1", "c/1"):
        write(tmp_path / rel, b"x", T0)
    real = local._list_dir

    def failing(abspath: bytes, prefix: bytes, *rest):
        if prefix == b"b/":
            raise Permanent(f"cannot list {os.fsdecode(abspath)}: Permission denied")
        return real(abspath, prefix, *rest)

    monkeypatch.setattr(local, "_list_dir", failing)  # the child is a fork: it runs this too
    got = {}
    for fork in (True, False):
        seen = []
        with pytest.raises(Permanent) as info:
            for row in LocalRemote(str(tmp_path)).list_rows(fork=fork):
                seen.append(row[0])
        got[fork] = (seen, str(info.value))
    assert got[True] == got[False]
    assert got[True][0] == [b"a/", b"a/1", b"b/"]


@needs_fork
def test_forked_errors_keep_their_type_and_a_dead_child_is_transient():
    def runs(exc: BaseException):
        def produce():
            yield [(b"a", FILE, 1, T0, 1, 1, 0o644, None, None, None)]
            raise exc
        return produce

    for exc, kind in ((NotFound("gone: x"), NotFound), (Transient("eio: x"), Transient),
                      (ValueError("bug"), RuntimeError)):
        it = forked.rows(runs(exc))
        assert next(it)[0] == b"a"
        with pytest.raises(kind) as info:
            next(it)
        assert ("bug" in str(info.value)) if kind is RuntimeError else str(info.value) == str(exc)

    def dies():
        yield [(b"a", FILE, 1, T0, 1, 1, 0o644, None, None, None)]
        os.kill(os.getpid(), 9)
        yield []

    with pytest.raises(Transient, match="killed by signal 9"):
        list(forked.rows(dies))  # never taken for a short listing


@needs_fork
def test_a_listing_abandoned_early_leaves_no_child(tmp_path):
    def produce():
        yield [(str(os.getpid()).encode(), FILE, 1, T0, 1, 1, 0o644, None, None, None)]
        while True:  # far more than the pipe holds
            yield [(b"x" * 200, FILE, 1, T0, 1, 1, 0o644, None, None, None)] * 1000

    it = forked.rows(produce)
    pid = int(next(it)[0])
    for _ in range(5000):
        next(it)
    del it  # the consumer gives up, as a failed merge does
    with pytest.raises((ProcessLookupError, ChildProcessError)):
        os.waitpid(pid, os.WNOHANG)


def _plan_ops(src: Path, dst: Path, state: Path, fork: bool, monkeypatch) -> list[dict]:
    monkeypatch.setattr(forked, "available", lambda: fork)
    run = Run(str(src), str(dst), RunOptions(state_dir=str(state), delete=True, max_delete=100), Quiet())
    try:
        return [o.to_json() for o in run.plan().plan.ops]
    finally:
        run.close()


@needs_fork
def test_plan_is_the_same_with_and_without_the_child(tmp_path, monkeypatch):
    src, dst = tmp_path / "src", tmp_path / "dst"
    odd_tree(src)
    odd_tree(dst)
    write(src / "new", b"n", T0)
    write(src / "a/x", b"changed!", T0 + 5)
    write(dst / "gone/f", b"old", T0)
    write(dst / "a-b", b"other size", T0)
    with_child = _plan_ops(src, dst, tmp_path / "s1", True, monkeypatch)
    without = _plan_ops(src, dst, tmp_path / "s2", False, monkeypatch)
    assert with_child == without
    assert {"op": "upload", "path": "new", "size": 1, "reason": "new"} in with_child
    assert {"op": "delete", "kind": "dir", "path": "gone", "files": 1} in with_child


@needs_fork
def test_a_destination_folder_that_cannot_be_listed_is_one_line_and_exit_1(tmp_path):
    """a path longer than PATH_MAX fails even for root: the child's error
    reaches the user as the in-process one did."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "f", b"1", T0)
    write(dst / "f", b"1", T0)
    fd = os.open(dst, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(20):  # 20 x 250 bytes: past PATH_MAX (4096)
            os.mkdir("d" * 250, dir_fd=fd)
            nfd = os.open("d" * 250, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
    finally:
        os.close(fd)
    p = reconcile("plan", src, dst, "--state-dir", tmp_path / "state", check=1)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reconcile: cannot list ") and "too long" in lines[0]


def test_a_quiet_plan_imports_neither_rich_nor_pathspec(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "f", b"1", T0)
    code = ("import sys\nfrom reconcile.cli import app\n"
            "try:\n    app(sys.argv[1:], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'rich', 'pathspec'}))")
    p = subprocess.run([sys.executable, "-c", code, "plan", str(src), str(dst), "-q", "--state-dir",
                        str(tmp_path / "state")], capture_output=True, text=True, check=True)
    assert p.stdout.strip().splitlines()[-1] == "[]"
