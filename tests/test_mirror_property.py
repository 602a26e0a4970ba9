"""Random trees under random sequences of changes must end in an exact mirror
(bytes and mtimes) after each apply, and a second plan must be empty."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from reconcile.remotes.local import LocalRemote
from tests.mirror import run, tree, write

NAMES = ["a", "b", "a-b", "a0", "B", "c d"]


class Clock:
    def __init__(self) -> None:
        self.t = 1_600_000_000_000_000_000

    def tick(self) -> int:
        self.t += 1_000_000_007
        return self.t


def all_paths(root: Path) -> tuple[list[str], list[str]]:
    files, dirs = [], []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        (dirs if p.is_dir() else files).append(rel)
    return files, dirs


def fresh_path(data, root: Path) -> Path:
    depth = data.draw(st.integers(1, 3))
    parts = [data.draw(st.sampled_from(NAMES)) for _ in range(depth)]
    p = root.joinpath(*parts)
    # never put a path under an existing file
    for anc in list(p.parents)[::-1]:
        if anc != root and anc.is_file():
            return root / (anc.name + "-x")
    return p


def change(data, root: Path, clock: Clock) -> None:
    files, dirs = all_paths(root)
    kind = data.draw(st.sampled_from(
        ["create", "create", "modify", "modify_same_size", "delete", "move_file", "move_dir", "swap",
         "file_to_dir", "dir_to_file", "rmtree", "move_over"]))
    if kind == "create" or not files:
        p = fresh_path(data, root)
        if p.exists():
            return
        write(p, data.draw(st.binary(max_size=300)), clock.tick())
    elif kind == "modify":
        p = root / data.draw(st.sampled_from(files))
        write(p, data.draw(st.binary(max_size=300)), clock.tick())
    elif kind == "modify_same_size":
        p = root / data.draw(st.sampled_from(files))
        old = p.read_bytes()
        write(p, bytes((b + 1) % 256 for b in old), clock.tick())
    elif kind == "delete":
        (root / data.draw(st.sampled_from(files))).unlink()
    elif kind in ("move_file", "move_dir"):
        pool = files if kind == "move_file" or not dirs else dirs
        src = root / data.draw(st.sampled_from(pool))
        dst = fresh_path(data, root)
        if dst.exists() or src == dst or dst.is_relative_to(src) or src.is_relative_to(dst):
            return
        dst.parent.mkdir(parents=True, exist_ok=True)
        src.rename(dst)
    elif kind == "swap":
        pool = files + dirs
        if len(pool) < 2:
            return
        a = root / data.draw(st.sampled_from(pool))
        b = root / data.draw(st.sampled_from(pool))
        if a == b or a.is_relative_to(b) or b.is_relative_to(a):
            return
        tmp = root.parent / "swap-tmp"
        a.rename(tmp)
        b.rename(a)
        tmp.rename(b)
    elif kind == "move_over" and len(files) > 1:
        a = root / data.draw(st.sampled_from(files))
        b = root / data.draw(st.sampled_from(files))
        if a != b:
            a.replace(b)  # mv a b where b exists
    elif kind == "file_to_dir":
        p = root / data.draw(st.sampled_from(files))
        p.unlink()
        write(p / data.draw(st.sampled_from(NAMES)), b"now a dir", clock.tick())
    elif kind == "dir_to_file" and dirs:
        p = root / data.draw(st.sampled_from(dirs))
        shutil.rmtree(p)
        write(p, b"now a file", clock.tick())
    elif kind == "rmtree" and dirs:
        shutil.rmtree(root / data.draw(st.sampled_from(dirs)))


@settings(max_examples=int(os.environ.get("RECONCILE_PROPERTY_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_random_changes_end_in_exact_mirror(data):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src, dst, state = tmp / "src", tmp / "dst", tmp / "state"
        src.mkdir()
        dst.mkdir()
        clock = Clock()
        for _ in range(data.draw(st.integers(1, 8))):
            change(data, src, clock)
        for round_ in range(data.draw(st.integers(1, 4))):
            result = run(src, str(dst), state, delete=True, max_delete=10**9, allow_empty_source=True)
            assert result.outcome.complete, result.outcome.results
            # nothing changes during the run, so no operation may be skipped
            assert result.outcome.count("skipped") == 0, [o.to_json() for o in result.plan.ops]
            assert tree(dst) == tree(src)
            again = run(src, str(dst), state, mode="plan", delete=True, max_delete=10**9,
                        allow_empty_source=True)
            assert again.plan.ops == [], [o.to_json() for o in again.plan.ops]
            assert not any(".reconcile-tmp-" in p for p in tree(dst))
            for _ in range(data.draw(st.integers(1, 6))):
                change(data, src, clock)
        assert LocalRemote(str(dst)).remove_temp_files() == 0
