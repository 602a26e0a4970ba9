"""--bwlimit: does the limit hold, all transfers together, over a long transfer?"""

from __future__ import annotations

import os

from bench.common import ROOT, Case, Check, drop_dirty, log, repeat, reconcile_cmd, rmtree
from bench.data import make_big_file
from bench.servers import Sshd

FILES = 8  # more files than --transfers, so the limit is shared by parallel uploads
TRANSFERS = 4


def run(srv: Sshd, rate: int, seconds: int, runs: int) -> Case:
    total = rate * seconds
    src = f"{ROOT}/bwlimit/src-{total}"
    for i in range(FILES):
        make_big_file(f"{src}/part-{i}.bin", total // FILES, 400 + i)
    out, state = f"{ROOT}/bwlimit/dst", f"{ROOT}/state/bwlimit"

    def fresh(_: int) -> None:
        rmtree(out)
        rmtree(state)
        os.makedirs(f"{out}/r")
        os.makedirs(f"{out}/rs")
        drop_dirty()

    kib = rate // 1024
    case = Case("controls", f"--bwlimit {kib // 1024}M over {seconds} s: {FILES} files, {total >> 20} MiB")
    log(f"bwlimit {kib} KiB/s for {seconds} s")
    ours = case.add(repeat(
        "reconcile apply --bwlimit",
        [*reconcile_cmd(), "apply", src, srv.url(f"{out}/r"), *srv.reconcile_args(), "--state-dir", state,
         "-q", "--bwlimit", f"{kib}K", "--transfers", str(TRANSFERS)], runs, fresh))
    rs = case.add(repeat("rsync --bwlimit over ssh",
                         ["rsync", "-a", f"--bwlimit={kib}", "-e", srv.ssh_command(), src + "/",
                          f"root@127.0.0.1:{out}/rs/"], runs, fresh))
    for s in (ours, rs):
        s.note = f"{total / s.median / rate:.3f}× the limit"
    # the whole run counts (start-up, listing, rename), so a short run undershoots:
    # the 10% target is judged on a transfer of 30 s or more only
    judged = seconds >= 30
    got = total / ours.median / rate
    case.checks.append(Check("achieved rate / limit, all transfers together", f"{got:.3f}×",
                             "0.90–1.10×" if judged else "— (short run)", 0.9 <= got <= 1.1 if judged else None))
    worst = max(abs(total / t / rate - 1) for t in ours.times)
    case.checks.append(Check("worst run's deviation from the limit", f"{worst:.1%}",
                             "≤ 10%" if judged else "—", worst <= 0.1 if judged else None))
    peer = total / rs.median / rate
    case.checks.append(Check("rsync --bwlimit, same data", f"{peer:.3f}×", "—", None))
    return case
