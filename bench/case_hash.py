"""Hashing: reconcile.hashing.hash_file against xxh128sum, page cache warm."""

from __future__ import annotations

import os
import sys

from bench.common import ROOT, Case, Check, Run, Series, log, mb, repeat, run_timed
from bench.data import make_big_file

CHILD = ("import sys, time; from reconcile.hashing import hash_file; "
         "t = time.perf_counter(); hash_file(sys.argv[1]); print(time.perf_counter() - t)")


def run(size: int, runs: int) -> list[Case]:
    path = make_big_file(f"{ROOT}/hash/big.bin", size, 3)
    os.system(f"cat {path} > /dev/null")
    log(f"hashing {size >> 20} MiB")
    case = Case("hashing", f"one {size >> 20} MiB file from the page cache")
    peer = case.add(repeat("xxh128sum", ["xxh128sum", path], runs))
    proc = case.add(repeat("hash_file, whole process", [sys.executable, "-c", CHILD, path], runs))
    inner = case.add(Series("hash_file, in-process time", "time.perf_counter() around hash_file() in that process"))
    inner.runs = [Run(float(r.stdout.strip()), r.rss_kb, "", "") for r in proc.runs]
    for s in (peer, proc, inner):
        s.note = mb(size / s.median)
    throughput = peer.median / inner.median
    case.checks.append(Check("hash_file throughput vs xxh128sum", f"{throughput:.2f}×", "≥ 0.80×",
                             throughput >= 0.8))
    whole = peer.median / proc.median
    case.checks.append(Check("same, counting interpreter start-up", f"{whole:.2f}×", "—", None))
    return [case]
