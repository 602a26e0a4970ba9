"""S3 (SeaweedFS) against aws s3 sync and rclone, same server, same data."""

from __future__ import annotations

import json
import os
import shutil

from bench.case_sftp import count_ops
from bench.common import (ROOT, Case, Check, Series, drop_dirty, log, mb, repeat, reconcile_cmd,
                          rmtree, run_timed)
from bench.data import make_big_file, make_tree
RETRY = "20s"  # a dead server fails the case fast instead of after 5 min
OUR_TRANSFERS = 16  # reconcile's default for S3 (reconcile/remotes/s3/remote.py DEFAULT_TRANSFERS)

from bench.servers import s3_env


class S3Bench:
    """one bucket on the server; every tool writes under its own prefix."""

    def __init__(self, server, aws: str, rclone: str | None) -> None:
        self.server = server
        self.endpoint = server.endpoint
        self.aws = aws
        self.rclone = rclone
        self.env = s3_env(self.endpoint)
        # aws-cli reads its concurrency from a config file only
        config = f"{ROOT}/s3/aws-config-{OUR_TRANSFERS}"
        os.makedirs(os.path.dirname(config), exist_ok=True)
        with open(config, "w") as f:
            f.write(f"[default]\ns3 =\n  max_concurrent_requests = {OUR_TRANSFERS}\n")
        self.env_ours = {**self.env, "AWS_CONFIG_FILE": config}
        self.bucket = server.new_bucket("bench")

    def ours(self, src: str, prefix: str, state: str, *more: str) -> list[str]:
        return [*reconcile_cmd(), "apply", src, f"s3://{self.bucket}/{prefix}", "--s3-endpoint",
                self.endpoint, "--state-dir", state, "-q", "--retry-for", RETRY, *more]

    def aws_sync(self, src: str, prefix: str, *more: str) -> list[str]:
        return [self.aws, "s3", "sync", src, f"s3://{self.bucket}/{prefix}", "--endpoint-url",
                self.endpoint, "--only-show-errors", *more]

    def rclone_sync(self, src: str, prefix: str, *more: str) -> list[str]:
        return [self.rclone or "rclone", "sync", src, f"bs3:{self.bucket}/{prefix}", *more]

    def peers(self, make_aws, make_rclone) -> list[tuple[str, object, dict]]:
        """(tool, i -> argv, env): each peer at its defaults and at our transfer count."""
        out = [("aws s3 (defaults: 10 requests)", make_aws, self.env),
               (f"aws s3 ({OUR_TRANSFERS} requests)", make_aws, self.env_ours)]
        if self.rclone:
            out += [("rclone (defaults: 4 transfers)", make_rclone, self.env),
                    (f"rclone --transfers {OUR_TRANSFERS}",
                     lambda i: [*make_rclone(i), "--transfers", str(OUR_TRANSFERS)], self.env)]
        return out

    def time(self, tool: str, argv: list[str], runs: int, before=None) -> Series:
        return repeat(tool, argv, runs, before, env=self.env)


def first_and_nochange(b: S3Bench, files: int, runs: int) -> list[Case]:
    src = make_tree(f"{ROOT}/s3/first-src", files, 1024, 32 * 1024, 51)  # no 0-byte files
    first = Case("s3", f"first sync, {files:,} files of 1–32 KB")
    log(f"s3 first sync of {files:,} files")
    tools = [("reconcile apply", lambda i: b.ours(src, f"r-first-{i}", f"{ROOT}/state/s3-first-{i}"), b.env),
             *b.peers(lambda i: b.aws_sync(src, f"aws-first-{i}"),
                      lambda i: b.rclone_sync(src, f"rclone-first-{i}"))]
    series = [first.add(s) for s in _fresh_prefix_runs(b, tools, runs)]
    for peer in series[1:]:
        first.ratio(series[0], peer, 0.5 if peer.tool == "aws s3 (defaults: 10 requests)" else None)
    log(f"s3 no-change over {files:,} objects")
    nc = Case("s3", f"no-change run, {files:,} objects")
    last = runs - 1
    nc_series = [nc.add(Series(tool, " ".join(make(last)))) for tool, make, _ in tools]
    for _ in range(runs):  # taken in turn, so a slow spell of the host hits every tool alike
        for s, (_, make, env) in zip(nc_series, tools):
            s.runs.append(run_timed(make(last), env))
    for peer in nc_series[1:]:
        nc.ratio(nc_series[0], peer, 1.0 if peer.tool == "aws s3 (defaults: 10 requests)" else None)
    nc.checks.append(Check("peak RSS (reconcile)", f"{nc_series[0].peak_rss_mb:.0f} MB", "—", None))
    return [first, nc]


def _fresh_prefix_runs(b: S3Bench, tools: list, runs: int) -> list[Series]:
    """run i of each tool writes to its own fresh prefix, so every run is a
    first sync; the tools take turns."""
    series = [Series(tool, " ".join(make("N"))) for tool, make, _ in tools]
    for i in range(runs):
        for s, (_, make, env) in zip(series, tools):
            drop_dirty()
            s.runs.append(run_timed(make(i), env))
    return series


def big_file(b: S3Bench, size: int, runs: int) -> Case:
    src_dir = f"{ROOT}/s3/big-src"
    src = make_big_file(f"{src_dir}/big.bin", size, 9)
    os.system(f"cat {src} > /dev/null")
    case = Case("s3", f"one {size >> 20} MiB file")
    log(f"s3 one {size >> 20} MiB file")
    tools = [("reconcile apply", lambda i: b.ours(src_dir, f"r-big-{i}", f"{ROOT}/state/s3-big-{i}"), b.env),
             *b.peers(lambda i: [b.aws, "s3", "cp", src, f"s3://{b.bucket}/aws-big-{i}/big.bin",
                                 "--endpoint-url", b.endpoint, "--only-show-errors"],
                      lambda i: [b.rclone, "copy", src_dir, f"bs3:{b.bucket}/rclone-big-{i}"])]
    series = [case.add(s) for s in _fresh_prefix_runs(b, tools, runs)]
    for s in series:
        s.note = mb(size / s.median)
    for peer in series[1:]:
        gated = peer.tool == "aws s3 (defaults: 10 requests)"
        case.ratio(series[0], peer, 1.0 if gated else None,
                   f"time vs {peer.tool}" + (" (≥ 1.0× its throughput)" if gated else ""))
    return case


def rename(b: S3Bench, files: int, runs: int) -> Case:
    src = f"{ROOT}/s3/ren-src"
    make_tree(src, files, 1024, 32 * 1024, 61)
    if os.path.exists(f"{src}/renamed"):
        os.rename(f"{src}/renamed", f"{src}/t000")
    names = ("t000", "renamed")
    state = f"{ROOT}/state/s3-ren"
    rmtree(state)
    from bench.delay import DelayProxy

    ours = b.ours(src, "r-ren", state, "--delete")
    tools = [("reconcile apply", ours),
             ("aws s3 sync --delete", b.aws_sync(src, "aws-ren", "--delete"))]
    if b.rclone:
        tools.append(("rclone sync", b.rclone_sync(src, "rclone-ren")))
    for _, argv in tools:
        run_timed(argv, b.env)  # initial upload, untimed
    case = Case("s3", f"rename of a folder holding {files} objects")
    series = [case.add(Series(tool, " ".join(argv))) for tool, argv in tools]
    ops, reported = [], []
    folder_bytes = sum(os.path.getsize(os.path.join(d, n)) for d, _, ns in os.walk(src) for n in ns)
    plan = [*reconcile_cmd(), "plan", src, f"s3://{b.bucket}/r-ren", "--s3-endpoint", b.endpoint,
            "--state-dir", state, "--delete", "--json", "-q"]
    rounds = 0

    def rename_folder() -> None:
        nonlocal rounds
        os.rename(f"{src}/{names[rounds % 2]}", f"{src}/{names[(rounds + 1) % 2]}")
        rounds += 1
        drop_dirty()
        ops.append(count_ops(run_timed(plan, b.env).stdout))

    for _ in range(runs):
        rename_folder()
        for s, (_, argv) in zip(series, tools):  # every tool straight to the server
            s.runs.append(run_timed(argv, b.env))
        reported.append(json.load(open(f"{state}/last-run.json"))["bytes"])
    # one more rename, untimed, with reconcile's requests counted on the wire: a
    # proxy in this process costs CPU the timed runs must not pay alone
    rename_folder()
    wire = DelayProxy(int(b.endpoint.rsplit(":", 1)[1]), 0)
    counted = list(ours)
    counted[counted.index("--s3-endpoint") + 1] = f"http://127.0.0.1:{wire.port}"
    run_timed(counted, b.env)
    sent = [wire.bytes_up]
    reported.append(json.load(open(f"{state}/last-run.json"))["bytes"])
    wire.close()
    moves = ops[-1]
    case.checks.append(Check("operations in `plan --json`", ", ".join(f"{n} {k}" for k, n in sorted(moves.items())),
                             "one folder move", all(o == {"move": 1} for o in ops)))
    # a server-side copy and a delete per object: a request or two of headers each, no file data
    case.checks.append(Check("bytes reconcile sent to the server, counted on the wire (requests only)",
                             f"{max(sent):,} ({max(sent) // files:,} per object; the folder holds {folder_bytes:,})",
                             "≤ 4 KiB per object", max(sent) <= 4096 * files))
    case.checks.append(Check("file bytes uploaded, as reconcile reports them", f"{max(reported):,}", "0",
                             max(reported) == 0))
    for peer in series[1:]:
        case.ratio(series[0], peer, 0.2 if peer.tool.startswith("aws") else None,
                   f"time vs {peer.tool}" + (" (≥ 5× faster)" if peer.tool.startswith("aws") else ""))
    return case


def run(server, tools: dict, size, only: set[str]) -> list[Case]:
    b = S3Bench(server, tools["aws"], tools.get("rclone"))
    steps = {"s3-first": lambda: first_and_nochange(b, size.s3_first, size.runs),
             "s3-rename": lambda: [rename(b, size.rename, size.runs)],
             "s3-big": lambda: [big_file(b, size.big, size.runs)]}
    cases = []
    for name, fn in steps.items():
        if not only or name in only or "s3" in only:
            cases.extend(fn())
    return cases
