"""Timing, peak memory and the result records every case fills in."""

from __future__ import annotations

import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

ROOT = os.environ.get("RECONCILE_BENCH_ROOT", "/tmp/reconcile-bench")  # data, servers, state
TIME = "/usr/bin/time" if os.path.exists("/usr/bin/time") else None
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Run:
    seconds: float
    rss_kb: int
    stdout: str
    stderr: str


@dataclass
class Series:
    """several timed runs of one command line."""
    tool: str
    command: str
    runs: list[Run] = field(default_factory=list)
    note: str = ""

    @property
    def times(self) -> list[float]:
        return [r.seconds for r in self.runs]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def peak_rss_mb(self) -> float:
        return max(r.rss_kb for r in self.runs) / 1024


@dataclass
class Check:
    """one target: what was measured, what was wanted, and whether it held."""
    what: str
    measured: str
    target: str
    ok: bool | None  # None: reported, no target

    @property
    def verdict(self) -> str:
        return {True: "pass", False: "**miss**", None: "info"}[self.ok]


@dataclass
class Case:
    """one benchmark case: every timed series, its checks and notes."""
    group: str
    name: str
    series: list[Series] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, s: Series) -> Series:
        self.series.append(s)
        return s

    def ratio(self, ours: Series, peer: Series, target: float | None, what: str = "") -> float:
        """time ratio ours/peer, checked against `ratio <= target`."""
        r = ours.median / peer.median
        wanted = f"≤ {target:.2f}×" if target is not None else "—"
        self.checks.append(Check(what or f"time vs {peer.tool}", f"{r:.2f}×", wanted,
                                 None if target is None else r <= target))
        return r


class CommandFailed(RuntimeError):
    pass


def run_timed(argv: list[str], env: dict | None = None, cwd: str | None = None,
              ok_codes: tuple[int, ...] = (0,)) -> Run:
    """one subprocess: wall time by perf_counter, peak rss by /usr/bin/time.

    wait4() of our own child would count the pre-exec copy of this (bigger)
    process as the child's peak, so a tiny /usr/bin/time does the fork.
    """
    full_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    out_path, err_path, rss_path = f"{ROOT}/.stdout", f"{ROOT}/.stderr", f"{ROOT}/.rss"
    wrapped = [TIME, "-f", "%M", "-o", rss_path, *argv] if TIME else argv
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.run(wrapped, stdout=out, stderr=err, env=full_env, cwd=cwd,
                              stdin=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
    stdout = open(out_path, errors="replace").read()
    stderr = open(err_path, errors="replace").read()
    if proc.returncode not in ok_codes:
        raise CommandFailed(f"{shlex.join(argv)} exited {proc.returncode}:\n{stderr[-3000:]}\n{stdout[-1000:]}")
    return Run(seconds, _rss_kb(rss_path), stdout, stderr)


def _rss_kb(path: str) -> int:
    try:
        return int(open(path).read().split()[-1])
    except (OSError, ValueError, IndexError):
        return 0


def repeat(tool: str, argv: list[str], times: int, before: Callable[[int], None] | None = None,
           env: dict | None = None, shown: str | None = None, ok_codes: tuple[int, ...] = (0,)) -> Series:
    """time argv `times` times; before(i) runs untimed ahead of each run."""
    series = Series(tool, shown or shlex.join(argv))
    for i in range(times):
        if before:
            before(i)
        series.runs.append(run_timed(argv, env, ok_codes=ok_codes))
    return series


def alternate(tools: list[tuple[str, list[str]]], times: int,
              before: Callable[[int], None] | None = None, env: dict | None = None) -> list[Series]:
    """time each tool's argv `times` times, taking turns (A B A B ...), so a
    slow spell of the host (this VM's disk stalls now and then) falls on
    every tool alike instead of on whichever ran during it."""
    series = [Series(tool, shlex.join(argv)) for tool, argv in tools]
    for i in range(times):
        for s, (_, argv) in zip(series, tools):
            if before:
                before(i)
            s.runs.append(run_timed(argv, env))
    return series


PINNED: list[str] = []  # set by pin_code(): run reconcile from an exported revision


def pin_code(rev: str) -> str:
    """export reconcile/ at `rev` and run that copy, not the (changing) working tree."""
    code = f"{ROOT}/code"
    rmtree(code)
    os.makedirs(code)
    subprocess.run(f"git -C {REPO} archive {shlex.quote(rev)} reconcile | tar -x -C {code}", shell=True, check=True)
    byte_compile(code)
    os.environ["PYTHONPATH"] = code
    commit = subprocess.run(["git", "-C", REPO, "log", "-1", "--format=%h %s", rev], capture_output=True,
                            text=True, check=True).stdout.strip()
    PINNED.append(commit)
    return commit


def byte_compile(path: str) -> None:
    """compile the modules as pip install does: with PYTHONDONTWRITEBYTECODE set
    (as on this machine) every run would otherwise compile them, ~0.1 s each."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", path], check=True)


def reconcile_cmd() -> list[str]:
    """the installed console script, not a pyenv shim (which adds a bash hop)."""
    if PINNED:
        # -P: the current folder (the repo) must not shadow the exported copy on PYTHONPATH
        return [sys.executable, "-P", "-m", "reconcile"]
    here = os.path.join(os.path.dirname(sys.executable), "reconcile")
    return [here] if os.path.exists(here) else [sys.executable, "-m", "reconcile"]


def drop_dirty() -> None:
    """flush dirty pages between runs so one run's writeback does not tax the next."""
    os.sync()


def fresh_dirs(remove: list[str], make: list[str]) -> Callable[[int], None]:
    """a repeat() before-callback: empty folders and state for each timed run."""
    def fresh(_: int) -> None:
        for path in remove:
            rmtree(path)
        for path in make:
            os.makedirs(path)
        drop_dirty()

    return fresh


def rmtree(path: str) -> None:
    subprocess.run(["rm", "-rf", path], check=True)


def mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB/s"


def sh(argv: list[str], env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """untimed helper command."""
    return subprocess.run(argv, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          check=check)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)
