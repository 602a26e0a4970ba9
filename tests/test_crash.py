"""SIGKILL apply at chosen moments inside its work (tests/kill.py: a pause
point in the child, so every kill lands while it runs: an upload half sent, a
move or delete about to run, the Nth operation). Straight after the kill
every file under a real name is its old or its new version; the next apply
must converge to an exact mirror, leave no temp files, and never lose a file
that exists locally."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reconcile.statedir import StateDir
from tests.cli import reconcile
from tests.kill import start_stalled
from tests.mirror import tree, write

TRIALS = int(os.environ.get("RECONCILE_CRASH_TRIALS", "30"))


def build(src: Path, rng: random.Random) -> None:
    for i in range(150):
        write(src / f"d{i % 7}" / f"s{i}.bin", rng.randbytes(rng.randint(0, 4000)), 1_600_000_000_000_000_000 + i)
    for i in range(3):
        write(src / "big" / f"b{i}.bin", rng.randbytes(3_000_000), 1_600_000_000_000_000_000 + i)


def mutate(src: Path, rng: random.Random) -> None:
    (src / "d1").rename(src / "d1-renamed")
    (src / "d2" / "s2.bin").rename(src / "moved-s2.bin")
    shutil.rmtree(src / "d3")
    for i in range(40):
        write(src / "new" / f"n{i}.bin", rng.randbytes(rng.randint(0, 4000)), 1_700_000_000_000_000_000 + i)
    # over the 8 MiB a local copy sends at a time: a kill can find it half written
    write(src / "big" / "b0.bin", rng.randbytes(12_000_000), 1_700_000_000_000_000_000)
    # a swap
    (src / "d4" / "s4.bin").rename(src / "swap.tmp")
    (src / "d4" / "s11.bin").rename(src / "d4" / "s4.bin")
    (src / "swap.tmp").rename(src / "d4" / "s11.bin")


POINTS = ["upload", "move", "delete"]  # odd seeds stop at a random operation instead


@pytest.mark.parametrize("seed", range(TRIALS))
def test_sigkill_then_resume_converges(tmp_path, seed):
    rng = random.Random(seed)
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    src.mkdir()
    dst.mkdir()
    build(src, rng)
    reconcile("apply", src, dst, "--state-dir", state, check=0)
    old = tree(src, with_mtime=False)
    mutate(src, rng)
    new = tree(src, with_mtime=False)
    args = [sys.executable, "-m", "reconcile", "apply", str(src), str(dst), "--state-dir", str(state),
            "--delete", "--max-delete", "1000", "-q"]
    ops = json.loads(reconcile("plan", src, dst, "--state-dir", state, "--delete", "--max-delete", "1000",
                               "--json", check=0).stdout)["operations"]
    point = f"op:{rng.randint(1, len(ops))}" if seed % 2 else POINTS[seed % len(POINTS)]
    stalled = start_stalled(args, point, state, tmp_path / "stalled")
    stalled.kill()  # asserts the child was alive there, its journal on disk with that op not done
    # every file under a real name is its old or its new version, never partial
    for path, entry in tree(dst, with_mtime=False).items():
        if ".reconcile-tmp-" in path or entry[0] == "d":
            continue
        assert entry in (old.get(path), new.get(path)), f"{path} torn by a kill at {stalled.info}"
    reconcile("apply", src, dst, "--state-dir", state, "--delete", "--max-delete", "1000", check=0)
    assert tree(dst) == tree(src)
    assert not any(".reconcile-tmp-" in p for p in os.listdir(dst))
    assert not any(".reconcile-tmp-" in str(p) for p in dst.rglob("*"))
    assert reconcile("plan", src, dst, "--state-dir", state, "--delete", "--json", check=0).stdout.count('"op"') == 0


def test_temp_files_of_a_killed_run_are_cleared(tmp_path):
    # a kill while the snapshot was being rewritten leaves its temp file; the
    # next apply must clear it even when it has no snapshot of its own to rewrite
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src / "a.txt", b"a", 1_600_000_000_000_000_000)
    reconcile("apply", src, dst, "--state-dir", state, check=0)
    for path in StateDir(str(state)).temp_files():
        Path(path).write_bytes(b"half written")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (state / "remote" / f"s3-record.msgpack.tmp-{gone.pid}").write_bytes(b"killed writer")
    (state / "remote" / f"s3-record.msgpack.tmp-{os.getpid()}").write_bytes(b"a live plan's")
    reconcile("apply", src, dst, "--state-dir", state, check=0)
    assert not [n for n in os.listdir(state) if n.endswith(".tmp")]
    assert [n for n in os.listdir(state / "remote") if ".tmp" in n] == [f"s3-record.msgpack.tmp-{os.getpid()}"]
    assert tree(dst) == tree(src)
