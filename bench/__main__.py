"""python -m bench [--size small|full] [--only CASE...] [--output FILE]"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
import traceback

from bench.common import REPO, ROOT, Case, log, rmtree

CASES = ("local", "sftp", "sftp-first", "sftp-nochange", "sftp-big", "sftp-rename",
         "s3", "s3-first", "s3-rename", "s3-big", "hash", "profile", "bwlimit", "usb",
         "rtt", "rtt-sftp", "rtt-s3", "watch")
# not in a whole run: bench/case_watch.py takes about 15 minutes at full size (latency
# rounds, lsyncd's 15 s delays, a 200,000-file tree); its section goes below the page's mark
ASKED_ONLY = {"watch"}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description="reconcile against rsync, scp, rclone, aws-cli")
    p.add_argument("--size", choices=("small", "full"), default="full")
    p.add_argument("--only", nargs="+", choices=CASES, default=[], metavar="CASE",
                   help=f"run only these: {', '.join(CASES)}")
    p.add_argument("--output", help="write the report here instead of docs/benchmarks.md")
    p.add_argument("--analysis", help="markdown file pasted under 'Where time goes'")
    p.add_argument("--skip-1m", action="store_true", help="leave out the 1,000,000-file tree")
    p.add_argument("--rev", help="benchmark reconcile/ as of this git revision (e.g. HEAD), not the working tree")
    p.add_argument("--render", metavar="PICKLE", help="only re-write the report from a saved run")
    p.add_argument("--rtt", type=lambda v: tuple(int(x) for x in v.split(",")), metavar="MS,MS,...",
                   help="round-trip times of the rtt sweep (default 0,10,50,100; small: 0,20)")
    p.add_argument("--keep-data", action="store_true", help=f"keep {ROOT} afterwards (reused next run)")
    return p.parse_args(argv)


def wanted(only: set[str], group: str) -> bool:
    if group in ASKED_ONLY:
        return group in only
    return not only or group in only or any(o.startswith(group + "-") for o in only)


def main(argv: list[str]) -> int:
    from bench.config import SIZES
    from bench.peers import ensure_tools

    args = parse(argv)
    if args.render:
        return _render(args)
    size = SIZES[args.size]
    only = set(args.only)
    os.makedirs(ROOT, exist_ok=True)
    if args.rev:
        from bench.common import pin_code

        log(f"reconcile from {pin_code(args.rev)}")
    else:
        import reconcile
        from bench.common import byte_compile

        byte_compile(os.path.dirname(reconcile.__file__))
    started = time.perf_counter()
    tools = ensure_tools(["rsync", "rclone", "aws", "xxh128sum", "scp", "ssh"])
    cases: list[Case] = []
    profiles = []
    failures: list[str] = []
    scale = tuple(n for n in size.scale if not (args.skip_1m and n >= 1_000_000))
    try:
        if wanted(only, "local"):
            _guard(failures, "local", lambda: cases.extend(_local(scale, size.runs)))
        if wanted(only, "hash"):
            _guard(failures, "hash", lambda: cases.extend(_hash(size)))
        if wanted(only, "sftp") or (size.profile and wanted(only, "profile")):
            _guard(failures, "sftp", lambda: _sftp(size, only, cases, profiles, scale))
        if wanted(only, "s3"):
            _guard(failures, "s3", lambda: cases.extend(_s3(size, only, tools)))
        if wanted(only, "bwlimit"):
            _guard(failures, "bwlimit", lambda: cases.extend(_bwlimit(size, tools)))
        if wanted(only, "usb"):
            _guard(failures, "usb", lambda: cases.extend(_usb(size)))
        if wanted(only, "rtt"):
            _guard(failures, "rtt", lambda: cases.extend(_rtt(size, only, tools, args.rtt)))
        if wanted(only, "watch"):
            _guard(failures, "watch", lambda: _watch(args.size, args.output))
    finally:
        out = args.output or os.path.join(REPO, "docs", "benchmarks.md")
        if only and only <= ASKED_ONLY:  # the page above the mark is left as it is
            log(f"wrote the watch section below the mark of {out} in {time.perf_counter() - started:.0f} s")
        else:
            _write_page(args, cases, profiles, tools, failures, started, out)
        if not args.keep_data:
            rmtree(ROOT)
    return 1 if failures else 0


def _write_page(args, cases, profiles, tools, failures, started, out) -> None:
    """the whole page above the mark, from this run's cases"""
    from bench.peers import versions
    from bench.report import write

    analysis = open(args.analysis).read() if args.analysis else ""
    if failures:
        analysis += "\n\nCases that failed to run:\n\n" + "\n".join(f"- {f}" for f in failures)
    facts = (args.size, cases, profiles, versions(tools), analysis, time.perf_counter() - started)
    _save(facts, partial=bool(args.only))
    write(out, *facts)
    _plot(cases, out)
    log(f"wrote {out} in {time.perf_counter() - started:.0f} s")


SAVED = os.path.join(REPO, "bench", "out")


def _save(facts: tuple, partial: bool) -> None:
    """keep the raw figures (bench/out is git-ignored) so the report can be re-rendered.
    A run of some cases (--only) is kept apart: it must not replace a whole run's figures."""
    os.makedirs(SAVED, exist_ok=True)
    name = f"results-{facts[0]}{'-only' if partial else ''}.pickle"
    with open(os.path.join(SAVED, name), "wb") as f:
        pickle.dump(facts, f)


def _render(args) -> int:
    from bench.report import write

    with open(args.render, "rb") as f:
        size, cases, profiles, vers, analysis, elapsed = pickle.load(f)
    if args.analysis:
        failed = analysis.partition("\n\nCases that failed")
        analysis = open(args.analysis).read() + failed[1] + failed[2]
    write(args.output or os.path.join(REPO, "docs", "benchmarks.md"), size, cases, profiles, vers,
          analysis, elapsed)
    return 0


def _guard(failures: list[str], name: str, fn) -> None:
    """one group failing must not lose the others' figures."""
    try:
        fn()
    except Exception as exc:
        traceback.print_exc()
        failures.append(f"{name}: {str(exc).splitlines()[0][:300]}")


def _local(scale, runs):
    from bench import case_local

    return case_local.run(scale, runs)


def _usb(size):
    from bench import case_usb

    return case_usb.run(10_000 if size.name == "full" else 2_000, size.runs)


def _hash(size):
    from bench import case_hash

    return case_hash.run(size.hash_bytes, size.runs)


def _sftp(size, only, cases, profiles, scale) -> None:
    from bench import case_sftp
    from bench.servers import start_sshd

    srv = start_sshd()
    try:
        if wanted(only, "sftp"):
            cases.extend(case_sftp.run(srv, size, {o for o in only if o.startswith("sftp")}))
        if size.profile and wanted(only, "profile"):
            profiles.extend(_profiles(srv, size, scale))
    finally:
        srv.stop()


def _profiles(srv, size, scale):
    from bench.case_local import trees
    from bench.common import drop_dirty
    from bench.data import make_tree
    from bench.profile import record

    n = scale[0]
    src, dst = trees(n)
    state = f"{ROOT}/state/local-{n}"
    plan = [sys.executable, "-P", "-m", "reconcile", "plan", src, dst, "--delete", "--state-dir", state, "-q"]
    first_src = make_tree(f"{ROOT}/sftp/first-src", size.sftp_first, 1024, 32 * 1024, 31)
    out, st = f"{ROOT}/sftp/prof-dst", f"{ROOT}/state/sftp-prof"

    def fresh() -> None:
        rmtree(out)  # not made again: a first sync makes its own destination folder
        rmtree(st)
        drop_dirty()

    apply = [sys.executable, "-P", "-m", "reconcile", "apply", first_src, srv.url(out), *srv.reconcile_args(),
             "--state-dir", st, "-q"]
    nc = f"{ROOT}/sftp/nc-src-{size.sftp_nochange}", f"{ROOT}/sftp/nc-dst-{size.sftp_nochange}"
    profs = [record(f"no-change plan, local, {n:,} files", plan)]
    if os.path.isdir(nc[0]):
        profs.append(record(f"no-change plan, sftp, {size.sftp_nochange:,} files",
                            [sys.executable, "-P", "-m", "reconcile", "plan", nc[0], srv.url(nc[1]),
                             *srv.reconcile_args(), "--state-dir", f"{ROOT}/state/sftp-nc", "--delete", "-q"]))
    profs.append(record(f"first sync of {size.sftp_first:,} files to sftp", apply, before=fresh))
    return profs


def _rtt(size, only, tools, rtts):
    """the delay-proxy sweep: SFTP and S3 at each round-trip time."""
    import dataclasses

    from bench import case_rtt
    from bench.servers import start_seaweed, start_sshd

    sweep = case_rtt.FULL if size.name == "full" else case_rtt.SMALL
    if rtts:
        sweep = dataclasses.replace(sweep, rtts=rtts)
    cases = []
    if wanted(only, "rtt-sftp") or "rtt" in only:
        srv = start_sshd()
        try:
            cases += case_rtt.sftp(srv, sweep)
        finally:
            srv.stop()
    if wanted(only, "rtt-s3") or "rtt" in only:
        server = start_seaweed()
        try:
            cases += case_rtt.s3(server, tools["aws"], tools.get("rclone"), sweep)
        finally:
            server.stop()
    return cases


def _watch(size: str, output: str | None) -> None:
    from bench import case_watch

    if case_watch.main(["--size", size, "--into", output or os.path.join(REPO, "docs", "benchmarks.md")]):
        raise RuntimeError("bench.case_watch failed")


def _plot(cases, out: str) -> None:
    """the RTT sweep's figure, beside the report."""
    from bench.plot_rtt import draw

    try:
        draw(cases, os.path.join(os.path.dirname(os.path.abspath(out)), "rtt-sweep.svg"))
    except Exception:
        traceback.print_exc()  # a figure that failed must not lose the report


def _bwlimit(size, tools):
    from bench import case_bwlimit
    from bench.servers import start_seaweed, start_sshd

    srv = start_sshd()
    try:
        cases = [case_bwlimit.sftp(srv, size.bw_rate, size.bw_seconds, size.runs)]
    finally:
        srv.stop()
    server = start_seaweed()
    try:
        cases.append(case_bwlimit.s3(server, tools.get("rclone"), size.bw_rate, size.bw_seconds, size.runs))
    finally:
        server.stop()
    return cases


def _s3(size, only, tools):
    from bench import case_s3
    from bench.servers import start_seaweed

    server = start_seaweed()
    try:
        return case_s3.run(server, tools, size, {o for o in only if o.startswith("s3")})
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
