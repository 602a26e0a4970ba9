"""walk_rows_partial: walking only the paths that changed, the rest taken
from the snapshot, gives the rows a whole walk gives (reconcile watch)."""

from __future__ import annotations

import os
import random
import shutil

import pytest

from reconcile.excludes import Excludes
from reconcile.walk import WalkReport, walk_rows, walk_rows_partial


def _rows(root, excludes=Excludes()):
    return list(walk_rows(str(root), excludes, WalkReport()))


def _make(root, rng, n):
    made = []
    for i in range(n):
        depth = rng.randint(0, 3)
        folder = root.joinpath(*[rng.choice("abc-") + str(rng.randint(0, 2)) for _ in range(depth)])
        if folder.exists() and not folder.is_dir():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        f = folder / f"f{i}"
        if not f.exists():
            f.write_bytes(os.urandom(rng.randint(0, 50)))
            made.append(f)
    return made


def _mutate(root, rng) -> list[str]:
    """one change, and the paths a watcher's events would name"""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    dirs = sorted(p for p in root.rglob("*") if p.is_dir())
    rel = lambda p: p.relative_to(root).as_posix()  # noqa: E731
    kind = rng.choice(["edit", "new", "delete", "rename_dir", "mkdir_p", "dir_to_file", "delete_dir"])
    if kind == "edit" and files:
        f = rng.choice(files)
        f.write_bytes(os.urandom(rng.randint(51, 90)))
        return [rel(f)]
    if kind == "delete" and files:
        f = rng.choice(files)
        f.unlink()
        return [rel(f)]
    if kind == "rename_dir" and dirs:
        d = rng.choice(dirs)
        to = d.with_name(d.name + "-renamed")
        if not to.exists():
            d.rename(to)
            return [rel(d), rel(to)]
    if kind == "delete_dir" and dirs:
        d = rng.choice(dirs)
        shutil.rmtree(d)
        return [rel(d)]
    if kind == "dir_to_file" and dirs:
        d = rng.choice(dirs)
        shutil.rmtree(d)
        d.write_bytes(b"now a file")
        return [rel(d)]
    if kind == "mkdir_p":
        top = root / f"new{rng.randint(0, 99)}"
        if not top.exists():
            (top / "x" / "y").mkdir(parents=True)
            (top / "x" / "y" / "z").write_bytes(b"z")
            (top / "x" / "w").write_bytes(b"w")
            return [rel(top)]
    f = root / rng.choice(["", "a0", "b1"]) / f"n{rng.randint(0, 999)}"
    if f.parent.is_dir() and not f.exists():
        f.write_bytes(b"new")
        return [rel(f)]
    return []


@pytest.mark.parametrize("seed", range(30))
def test_partial_walk_equals_a_whole_walk(tmp_path, seed):
    rng = random.Random(seed)
    root = tmp_path / "src"
    root.mkdir()
    _make(root, rng, 60)
    previous = _rows(root)
    dirty: list[str] = []
    for _ in range(rng.randint(1, 6)):
        dirty += _mutate(root, rng)
    dirty = sorted({p for p in dirty if not any(p.startswith(q + "/") for q in dirty)})
    partial = list(walk_rows_partial(str(root), Excludes(), WalkReport(), "skip", dirty, previous))
    assert partial == _rows(root)


def test_a_change_outside_the_paths_is_not_seen(tmp_path):
    """the walk trusts the caller: what changed elsewhere keeps its snapshot row"""
    root = tmp_path / "src"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x").write_bytes(b"1")
    (root / "b").write_bytes(b"1")
    previous = _rows(root)
    (root / "a" / "x").write_bytes(b"22")
    (root / "b").write_bytes(b"22")
    rows = {r[0]: r for r in walk_rows_partial(str(root), Excludes(), WalkReport(), "skip", ["b"], previous)}
    assert rows[b"b"][2] == 2 and rows[b"a/x"][2] == 1


def test_excluded_and_temp_names_stay_out(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    previous = _rows(root, Excludes(["*.tmp"]))
    (root / "keep").write_bytes(b"k")
    (root / "skip.tmp").write_bytes(b"s")
    (root / "x.reconcile-tmp-1").write_bytes(b"t")
    rows = list(walk_rows_partial(str(root), Excludes(["*.tmp"]), WalkReport(), "skip",
                                  ["keep", "skip.tmp", "x.reconcile-tmp-1"], previous))
    assert [r[0] for r in rows] == [b"keep"]
