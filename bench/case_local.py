"""Local folder to local folder: no-change plan at several tree sizes."""

from __future__ import annotations

import os

from bench.common import ROOT, Case, Check, alternate, log, reconcile_cmd, rmtree, run_timed
from bench.data import make_tree

RSS_TARGET_MB = 64
SNAPSHOT_TARGET = 100


def trees(n: int) -> tuple[str, str]:
    """twin trees of n tiny files (1-64 bytes), same names, bytes and mtimes."""
    seed = 1000 + n
    return (make_tree(f"{ROOT}/local/src-{n}", n, 1, 64, seed),
            make_tree(f"{ROOT}/local/dst-{n}", n, 1, 64, seed))


def case_nochange(n: int, runs: int) -> Case:
    src, dst = trees(n)
    state = f"{ROOT}/state/local-{n}"
    rmtree(state)
    log(f"local {n:,}: first apply to record the snapshot")
    first = run_timed([*reconcile_cmd(), "apply", src, dst, "--delete", "--state-dir", state, "-q"])
    case = Case("local", f"no-change plan, {n:,} files")
    case.notes.append(f"untimed first `apply` (twin trees, nothing to send): {first.seconds:.1f} s; "
                      f"stderr: `{first.stderr.strip()[-120:]}`")
    ours_argv = [*reconcile_cmd(), "plan", src, dst, "--delete", "--state-dir", state, "-q"]
    rsync_argv = ["rsync", "-a", "--delete", "-n", src + "/", dst + "/"]
    for argv in (ours_argv, rsync_argv):  # warm the inode cache for both
        run_timed(argv)
    log(f"local {n:,}: timing")
    ours, rsync = (case.add(s) for s in alternate([("reconcile plan", ours_argv), ("rsync -n", rsync_argv)], runs))
    case.ratio(ours, rsync, 1.0, "time vs `rsync -a --delete -n`")
    rss = ours.peak_rss_mb
    case.checks.append(Check("peak RSS (reconcile)", f"{rss:.0f} MB", f"≤ {RSS_TARGET_MB} MB", rss <= RSS_TARGET_MB))
    case.checks.append(Check("peak RSS (rsync -n)", f"{rsync.peak_rss_mb:.0f} MB", "—", None))
    per_file = os.path.getsize(f"{state}/snapshot.msgpack") / n
    case.checks.append(Check("snapshot bytes per file", f"{per_file:.0f}", f"≤ {SNAPSHOT_TARGET}",
                             per_file <= SNAPSHOT_TARGET))
    return case


def run(sizes: tuple[int, ...], runs: int) -> list[Case]:
    return [case_nochange(n, runs) for n in sizes]
