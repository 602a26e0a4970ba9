"""Hashing: reconcile.hashing.hash_file against xxh128sum, page cache warm;
and many files hashed the way the engine's hash_needed does (two threads,
xxhash releases the GIL) against one thread."""

from __future__ import annotations

import os
import shlex
import sys

from bench.common import ROOT, Case, Check, Run, Series, log, mb, repeat, run_timed
from bench.data import make_big_file

MANY = 16  # files in the many-files case, each size/16 bytes

CHILD = ("import sys, time; from reconcile.hashing import hash_file; "
         "t = time.perf_counter(); hash_file(sys.argv[1]); print(time.perf_counter() - t)")


# one process: hash every file with n threads (n=1: in turn), print the in-process seconds
MANY_CHILD = ("import sys, time; from concurrent.futures import ThreadPoolExecutor; "
              "from reconcile.hashing import hash_file; n = int(sys.argv[1]); files = sys.argv[2:]; "
              "t = time.perf_counter(); pool = ThreadPoolExecutor(n); list(pool.map(hash_file, files)); "
              "print(time.perf_counter() - t)")


def run(size: int, runs: int) -> list[Case]:
    return [case_one(size, runs), case_many(size, runs)]


def case_many(size: int, runs: int) -> Case:
    files = [make_big_file(f"{ROOT}/hash/many-{i:02d}.bin", size // MANY, 10 + i) for i in range(MANY)]
    os.system(f"cat {' '.join(files)} > /dev/null")
    log(f"hashing {MANY} files of {size // MANY >> 20} MiB, one thread and two")
    case = Case("hashing", f"{MANY} files of {size // MANY >> 20} MiB from the page cache")
    peer = case.add(repeat("xxh128sum", ["xxh128sum", *files], runs))
    series, processes = {}, {}
    for n in (1, 2):
        whole = case.add(repeat(f"hash_file, {n} thread{'s' if n > 1 else ''}, whole process",
                                [sys.executable, "-c", MANY_CHILD, str(n), *files], runs))
        whole.note = mb(size / whole.median)
        inner = case.add(Series(f"hash_file, {n} thread{'s' if n > 1 else ''}, in-process time",
                                "time.perf_counter() around the pool in that process"))
        inner.runs = [Run(float(r.stdout.strip()), r.rss_kb, "", "") for r in whole.runs]
        inner.note = mb(size / inner.median)
        series[n], processes[n] = inner, whole
    peer.note = mb(size / peer.median)
    speedup = series[1].median / series[2].median
    case.checks.append(Check("two threads vs one, in-process (the engine hashes with two)", f"{speedup:.2f}× faster",
                             "—", None))
    # whole process against whole process: xxh128sum's time includes its start-up, so ours does too
    versus = peer.median / processes[2].median
    case.checks.append(Check("two threads vs xxh128sum, whole process each", f"{versus:.2f}×", "—", None))
    return case


def case_one(size: int, runs: int) -> Case:
    path = make_big_file(f"{ROOT}/hash/big.bin", size, 3)
    os.system(f"cat {path} > /dev/null")
    os.sync()  # a file just written is still being flushed: that disk work must not land on one tool's runs
    log(f"hashing {size >> 20} MiB")
    case = Case("hashing", f"one {size >> 20} MiB file from the page cache")
    theirs, ours = ["xxh128sum", path], [sys.executable, "-c", CHILD, path]
    peer = case.add(Series("xxh128sum", shlex.join(theirs)))
    proc = case.add(Series("hash_file, whole process", shlex.join(ours)))
    for _ in range(max(runs, 5)):  # taken in turn, so a slow spell of the machine hits both
        peer.runs.append(run_timed(theirs))
        proc.runs.append(run_timed(ours))
    inner = case.add(Series("hash_file, in-process time", "time.perf_counter() around hash_file() in that process"))
    inner.runs = [Run(float(r.stdout.strip()), r.rss_kb, "", "") for r in proc.runs]
    for s in (peer, proc, inner):
        s.note = mb(size / s.median)
    # the gate compares like with like: both whole processes, start-up included
    whole = peer.median / proc.median
    case.checks.append(Check("hash_file vs xxh128sum, whole process each", f"{whole:.2f}×", "≥ 0.80×",
                             whole >= 0.8))
    throughput = peer.median / inner.median
    case.checks.append(Check("hash_file in-process time vs xxh128sum's whole process (not like with like)",
                             f"{throughput:.2f}×", "—", None))
    return case
