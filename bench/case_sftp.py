"""SFTP against rsync over ssh and scp, on one loopback sshd."""

from __future__ import annotations

import json
import os
import re

from bench.common import (ROOT, Case, Check, Series, alternate, drop_dirty, fresh_dirs, log, mb, reconcile_cmd,
                          rmtree, run_timed)
from bench.data import make_big_file, make_tree
RETRY = "20s"  # a dead server fails the case fast instead of after 5 min

from bench.servers import Sshd


def _apply(srv: Sshd, src: str, dst: str, state: str, *more: str) -> list[str]:
    return [*reconcile_cmd(), "apply", src, srv.url(dst), *srv.reconcile_args(), "--state-dir", state,
            "-q", "--retry-for", RETRY, *more]


def _rsync(srv: Sshd, src: str, dst: str, *more: str) -> list[str]:
    return ["rsync", "-a", *more, "-e", srv.ssh_command(), src, f"root@127.0.0.1:{dst}"]


def first_sync(srv: Sshd, files: int, runs: int) -> Case:
    src = make_tree(f"{ROOT}/sftp/first-src", files, 1024, 32 * 1024, 31)
    out, state = f"{ROOT}/sftp/first-dst", f"{ROOT}/state/sftp-first"

    # the destination folders do not exist yet, as on a real first sync: each tool makes its own
    fresh = fresh_dirs([out, state], [out])

    case = Case("sftp", f"(a) first sync, {files:,} files of 1–32 KB")
    log(f"sftp first sync of {files:,} files")
    ours, rs = map(case.add, alternate([("reconcile apply", _apply(srv, src, f"{out}/r", state)),
                                        ("rsync over ssh", _rsync(srv, src + "/", f"{out}/rs/"))], runs, fresh))
    case.ratio(ours, rs, 1.5)
    return case


def nochange(srv: Sshd, files: int, runs: int) -> Case:
    seed = 2000 + files
    src = make_tree(f"{ROOT}/sftp/nc-src-{files}", files, 1, 64, seed)
    dst = make_tree(f"{ROOT}/sftp/nc-dst-{files}", files, 1, 64, seed)
    state = f"{ROOT}/state/sftp-nc"
    rmtree(state)
    log(f"sftp no-change over {files:,} files: first apply records the snapshot")
    first = run_timed(_apply(srv, src, dst, state, "--delete"))
    case = Case("sftp", f"(b) no-change run, {files:,} files")
    case.notes.append(f"untimed first `apply` over the twin tree: {first.seconds:.1f} s, "
                      f"`{first.stderr.strip()[-100:]}`")
    plan = [*reconcile_cmd(), "plan", src, srv.url(dst), *srv.reconcile_args(), "--state-dir", state,
            "-q", "--delete"]
    # a tree this large is listed by find over ssh (--ssh-find auto); an
    # SFTP-only server (a phone, ForceCommand internal-sftp) is listed over SFTP
    ours_plan, sftp_plan, rs_n = map(case.add, alternate([
        ("reconcile plan", plan),
        ("reconcile plan --ssh-find never", [*plan, "--ssh-find", "never"]),
        ("rsync -n over ssh", _rsync(srv, src + "/", dst + "/", "--delete", "-n"))], runs))
    ours, rs = map(case.add, alternate([("reconcile apply", _apply(srv, src, dst, state, "--delete")),
                                        ("rsync over ssh", _rsync(srv, src + "/", dst + "/", "--delete"))], runs))
    case.ratio(ours_plan, rs_n, 1.0, "`plan` vs `rsync -a --delete -n`")
    case.ratio(ours, rs, 1.0, "`apply` vs `rsync -a --delete`")
    case.ratio(sftp_plan, rs_n, None, "`plan --ssh-find never` (listed over SFTP) vs `rsync -n`")
    case.checks.append(Check("peak RSS (reconcile apply)", f"{ours.peak_rss_mb:.0f} MB", "≤ 64 MB",
                             ours.peak_rss_mb <= 64))
    return case


def big_file(srv: Sshd, size: int, runs: int) -> Case:
    src_dir = f"{ROOT}/sftp/big-src"
    src = make_big_file(f"{src_dir}/big.bin", size, 7)
    out, state = f"{ROOT}/sftp/big-dst", f"{ROOT}/state/sftp-big"
    os.system(f"cat {src} > /dev/null")  # from the page cache, for every tool

    fresh = fresh_dirs([out, state], [f"{out}/r"])

    case = Case("sftp", f"(c) one {size >> 20} MiB file")
    log(f"sftp one {size >> 20} MiB file")
    scp = ["scp", "-q", "-P", str(srv.port), "-i", srv.key, "-o", f"UserKnownHostsFile={srv.known_hosts}",
           "-o", "StrictHostKeyChecking=yes", src, f"root@127.0.0.1:{out}/scp.bin"]
    ours, sc, rs = map(case.add, alternate([("reconcile apply", _apply(srv, src_dir, f"{out}/r", state)),
                                            ("scp", scp),
                                            ("rsync over ssh", _rsync(srv, src, f"{out}/rs.bin"))], runs, fresh))
    for s in (ours, sc, rs):
        s.note = mb(size / s.median)
    case.ratio(ours, sc, 1.0, "time vs scp (≥ 1.0× scp's throughput)")
    case.ratio(ours, rs, None)
    return case


def rename(srv: Sshd, files: int, runs: int) -> Case:
    """a folder of `files` files renamed in the source, then one run of each tool."""
    src = f"{ROOT}/sftp/ren-src"
    make_tree(src, files, 1024, 32 * 1024, 41)  # all under t000/
    names = _reset_names(src)
    d_ours, d_rs, state = f"{ROOT}/sftp/ren-dst-r", f"{ROOT}/sftp/ren-dst-rs", f"{ROOT}/state/sftp-ren"
    for p in (d_ours, d_rs, state):
        rmtree(p)
    os.makedirs(d_ours)
    run_timed(_apply(srv, src, d_ours, state, "--delete"))
    run_timed(_rsync(srv, src + "/", d_rs + "/", "--delete"))
    case = Case("sftp", f"(d) rename of a folder holding {files} files")
    wire, ours_argv = _through_counter(srv, _apply(srv, src, d_ours, state, "--delete"))
    folder_bytes = sum(os.path.getsize(os.path.join(d, n)) for d, _, ns in os.walk(src) for n in ns)
    ours = case.add(Series("reconcile apply", _cmd_text(_apply(srv, src, d_ours, state, "--delete"))))
    rs = case.add(Series("rsync over ssh", _cmd_text(_rsync(srv, src + "/", d_rs + "/", "--delete", "--stats"))))
    ops, sent, literal, wired = [], [], [], []
    for i in range(runs):
        os.rename(f"{src}/{names[i % 2]}", f"{src}/{names[(i + 1) % 2]}")
        drop_dirty()
        ops.append(_plan_ops(srv, src, d_ours, state))
        up = wire.bytes_up
        ours.runs.append(run_timed(ours_argv))
        wired.append(wire.bytes_up - up)
        sent.append(_last_bytes(state))
        r = run_timed(_rsync(srv, src + "/", d_rs + "/", "--delete", "--stats"))
        rs.runs.append(r)
        literal.append(_rsync_stat(r.stdout, "Literal data"))
    wire.close()
    _rename_checks(case, ours, rs, ops, sent, literal)
    case.checks.append(Check("bytes reconcile sent to the server, counted on the wire (ssh handshake and requests)",
                             f"{max(wired):,} of {folder_bytes:,} in the folder", "≤ 5% of the folder",
                             max(wired) <= folder_bytes // 20))
    return case


def _through_counter(srv: Sshd, argv: list[str]):
    """a byte-counting proxy in front of sshd, and argv pointed at it (its port known to ssh)."""
    from bench.delay import DelayProxy

    wire = DelayProxy(srv.port, 0)  # no delay: it only counts
    with open(srv.known_hosts) as f:
        line = f.readline().strip()
    with open(srv.known_hosts, "a") as f:
        f.write(line.replace(f"]:{srv.port} ", f"]:{wire.port} ", 1) + "\n")
    old = srv.url("")
    return wire, [a.replace(old, f"sftp://root@127.0.0.1:{wire.port}", 1) if a.startswith(old) else a
                  for a in argv]


def _reset_names(src: str) -> tuple[str, str]:
    """t000 <-> renamed: put the folder back under its first name."""
    if os.path.exists(f"{src}/renamed"):
        os.rename(f"{src}/renamed", f"{src}/t000")
    return ("t000", "renamed")


def _rename_checks(case: Case, ours: Series, rs: Series, ops: list, sent: list, literal: list) -> None:
    kinds = ops[-1]
    one = all(o == kinds for o in ops) and kinds == {"move": 1}
    case.checks.append(Check("operations in `plan --json`", _fmt_ops(kinds), "one folder move", one))
    case.checks.append(Check("file bytes sent, as reconcile reports them", f"{max(sent):,}", "0", max(sent) == 0))
    case.checks.append(Check("file bytes sent (rsync, Literal data)", f"{min(literal):,}", "—", None))
    case.ratio(ours, rs, None)


def _fmt_ops(kinds: dict) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none"


def _plan_ops(srv: Sshd, src: str, dst: str, state: str) -> dict:
    argv = [*reconcile_cmd(), "plan", src, srv.url(dst), *srv.reconcile_args(), "--state-dir", state,
            "--delete", "--json", "-q"]
    return count_ops(run_timed(argv).stdout)


def count_ops(plan_json: str) -> dict:
    kinds: dict[str, int] = {}
    for op in json.loads(plan_json)["operations"]:
        kinds[op["op"]] = kinds.get(op["op"], 0) + 1
    return kinds


def _last_bytes(state: str) -> int:
    with open(f"{state}/last-run.json") as f:
        return int(json.load(f)["bytes"])


def _rsync_stat(text: str, name: str) -> int:
    m = re.search(rf"{name}: ([\d,]+)", text)
    return int(m.group(1).replace(",", "")) if m else -1


def _cmd_text(argv: list[str]) -> str:
    import shlex

    return shlex.join(argv)


def run(srv: Sshd, size, only: set[str]) -> list[Case]:
    cases = []
    steps = {"sftp-first": lambda: first_sync(srv, size.sftp_first, size.runs),
             "sftp-nochange": lambda: nochange(srv, size.sftp_nochange, size.runs),
             "sftp-big": lambda: big_file(srv, size.big, size.runs),
             "sftp-rename": lambda: rename(srv, size.rename, size.runs)}
    for name, fn in steps.items():
        if not only or name in only or "sftp" in only:
            cases.append(fn())
    return cases
