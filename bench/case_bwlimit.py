"""--bwlimit: does the limit hold, all transfers together, over a long transfer?
Over SFTP against rsync --bwlimit, and over S3 against rclone --bwlimit."""

from __future__ import annotations

from bench.common import ROOT, Case, Check, Series, alternate, drop_dirty, fresh_dirs, log, repeat, reconcile_cmd, rmtree
from bench.data import make_big_file

FILES = 8  # more files than --transfers, so the limit is shared by parallel uploads
TRANSFERS = 4


def _data(rate: int, seconds: int) -> tuple[str, int]:
    total = rate * seconds
    src = f"{ROOT}/bwlimit/src-{total}"
    for i in range(FILES):
        make_big_file(f"{src}/part-{i}.bin", total // FILES, 400 + i)
    return src, total


def sftp(srv, rate: int, seconds: int, runs: int) -> Case:
    src, total = _data(rate, seconds)
    out, state = f"{ROOT}/bwlimit/dst", f"{ROOT}/state/bwlimit"

    fresh = fresh_dirs([out, state], [f"{out}/r", f"{out}/rs"])

    kib = rate // 1024
    case = Case("controls", f"--bwlimit {kib // 1024}M over {seconds} s to SFTP: {FILES} files, {total >> 20} MiB")
    log(f"bwlimit {kib} KiB/s for {seconds} s, sftp")
    ours, peer = (case.add(s) for s in alternate([
        ("reconcile apply --bwlimit",
         [*reconcile_cmd(), "apply", src, srv.url(f"{out}/r"), *srv.reconcile_args(), "--state-dir", state,
          "-q", "--bwlimit", f"{kib}K", "--transfers", str(TRANSFERS)]),
        ("rsync --bwlimit over ssh",
         ["rsync", "-a", f"--bwlimit={kib}", "-e", srv.ssh_command(), src + "/", f"root@127.0.0.1:{out}/rs/"]),
    ], runs, fresh))
    _checks(case, ours, peer, total, rate, seconds)
    return case


def s3(server, rclone: str | None, rate: int, seconds: int, runs: int) -> Case:
    from bench.servers import s3_env

    src, total = _data(rate, seconds)
    env = s3_env(server.endpoint)
    bucket = server.new_bucket("bw")
    kib = rate // 1024
    case = Case("controls", f"--bwlimit {kib // 1024}M over {seconds} s to S3: {FILES} files, {total >> 20} MiB")
    log(f"bwlimit {kib} KiB/s for {seconds} s, s3")
    ours = case.add(Series("reconcile apply --bwlimit", ""))
    peer = case.add(Series("rclone copy --bwlimit", "")) if rclone else None
    for i in range(runs):
        state = f"{ROOT}/state/bwlimit-s3-{i}"
        rmtree(state)
        argv = [*reconcile_cmd(), "apply", src, f"s3://{bucket}/r{i}", "--s3-endpoint", server.endpoint,
                "--state-dir", state, "-q", "--bwlimit", f"{kib}K", "--transfers", str(TRANSFERS)]
        ours.command = " ".join(argv)
        ours.runs += repeat("", argv, 1, lambda _: drop_dirty(), env=env).runs
        if peer is not None:
            argv = [rclone, "copy", src, f"bs3:{bucket}/rclone{i}", "--bwlimit", f"{kib}k",
                    "--transfers", str(TRANSFERS)]
            peer.command = " ".join(argv)
            peer.runs += repeat("", argv, 1, lambda _: drop_dirty(), env=env).runs
    _checks(case, ours, peer, total, rate, seconds)
    return case


def _checks(case: Case, ours: Series, peer: Series | None, total: int, rate: int, seconds: int) -> None:
    for s in (ours, peer):
        if s is not None:
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
    if peer is not None:
        case.checks.append(Check(f"{peer.tool}, same data", f"{total / peer.median / rate:.3f}×", "—", None))
