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

from bench.servers import s3_env


class S3Bench:
    """one bucket on the server; every tool writes under its own prefix."""

    def __init__(self, server, aws: str, rclone: str | None) -> None:
        self.server = server
        self.endpoint = server.endpoint
        self.aws = aws
        self.rclone = rclone
        self.env = s3_env(self.endpoint)
        self.bucket = server.new_bucket("bench")

    def ours(self, src: str, prefix: str, state: str, *more: str) -> list[str]:
        return [*reconcile_cmd(), "apply", src, f"s3://{self.bucket}/{prefix}", "--s3-endpoint",
                self.endpoint, "--state-dir", state, "-q", "--retry-for", RETRY, *more]

    def aws_sync(self, src: str, prefix: str, *more: str) -> list[str]:
        return [self.aws, "s3", "sync", src, f"s3://{self.bucket}/{prefix}", "--endpoint-url",
                self.endpoint, "--only-show-errors", *more]

    def rclone_sync(self, src: str, prefix: str) -> list[str]:
        return [self.rclone or "rclone", "sync", src, f"bs3:{self.bucket}/{prefix}"]

    def time(self, tool: str, argv: list[str], runs: int, before=None) -> Series:
        return repeat(tool, argv, runs, before, env=self.env)


def first_and_nochange(b: S3Bench, files: int, runs: int) -> list[Case]:
    src = make_tree(f"{ROOT}/s3/first-src", files, 1024, 32 * 1024, 51)  # no 0-byte files
    first = Case("s3", f"first sync, {files:,} files of 1–32 KB")
    log(f"s3 first sync of {files:,} files")
    tools = [("reconcile apply", lambda i: b.ours(src, f"r-first-{i}", f"{ROOT}/state/s3-first-{i}")),
             ("aws s3 sync", lambda i: b.aws_sync(src, f"aws-first-{i}"))]
    if b.rclone:
        tools.append(("rclone sync", lambda i: b.rclone_sync(src, f"rclone-first-{i}")))
    series = [first.add(_fresh_prefix_runs(b, tool, make, runs)) for tool, make in tools]
    for peer in series[1:]:
        first.ratio(series[0], peer, 0.5 if peer.tool.startswith("aws") else None)
    log(f"s3 no-change over {files:,} objects")
    nc = Case("s3", f"no-change run, {files:,} objects")
    last = runs - 1
    nc_series = [nc.add(b.time(tool, make(last), runs)) for tool, make in tools]
    for peer in nc_series[1:]:
        nc.ratio(nc_series[0], peer, 1.0 if peer.tool.startswith("aws") else None)
    nc.checks.append(Check("peak RSS (reconcile)", f"{nc_series[0].peak_rss_mb:.0f} MB", "—", None))
    return [first, nc]


def _fresh_prefix_runs(b: S3Bench, tool: str, make, runs: int) -> Series:
    """run i writes to its own fresh prefix, so every run is a first sync."""
    s = Series(tool, " ".join(make("N")))
    for i in range(runs):
        drop_dirty()
        s.runs.append(run_timed(make(i), b.env))
    return s


def big_file(b: S3Bench, size: int, runs: int) -> Case:
    src_dir = f"{ROOT}/s3/big-src"
    src = make_big_file(f"{src_dir}/big.bin", size, 9)
    os.system(f"cat {src} > /dev/null")
    case = Case("s3", f"one {size >> 20} MiB file")
    log(f"s3 one {size >> 20} MiB file")
    tools = [("reconcile apply", lambda i: b.ours(src_dir, f"r-big-{i}", f"{ROOT}/state/s3-big-{i}")),
             ("aws s3 cp", lambda i: [b.aws, "s3", "cp", src, f"s3://{b.bucket}/aws-big-{i}/big.bin",
                                      "--endpoint-url", b.endpoint, "--only-show-errors"])]
    if b.rclone:
        tools.append(("rclone copy", lambda i: [b.rclone, "copy", src_dir, f"bs3:{b.bucket}/rclone-big-{i}"]))
    series = [case.add(_fresh_prefix_runs(b, tool, make, runs)) for tool, make in tools]
    for s in series:
        s.note = mb(size / s.median)
    for peer in series[1:]:
        case.ratio(series[0], peer, 1.0 if peer.tool.startswith("aws") else None,
                   f"time vs {peer.tool}" + (" (≥ 1.0× its throughput)" if peer.tool.startswith("aws") else ""))
    return case


def rename(b: S3Bench, files: int, runs: int) -> Case:
    src = f"{ROOT}/s3/ren-src"
    make_tree(src, files, 1024, 32 * 1024, 61)
    if os.path.exists(f"{src}/renamed"):
        os.rename(f"{src}/renamed", f"{src}/t000")
    names = ("t000", "renamed")
    state = f"{ROOT}/state/s3-ren"
    rmtree(state)
    tools = [("reconcile apply", b.ours(src, "r-ren", state, "--delete")),
             ("aws s3 sync --delete", b.aws_sync(src, "aws-ren", "--delete"))]
    if b.rclone:
        tools.append(("rclone sync", b.rclone_sync(src, "rclone-ren")))
    for _, argv in tools:
        run_timed(argv, b.env)  # initial upload, untimed
    case = Case("s3", f"rename of a folder holding {files} objects")
    series = [case.add(Series(tool, " ".join(argv))) for tool, argv in tools]
    ops, sent = [], []
    plan = [*reconcile_cmd(), "plan", src, f"s3://{b.bucket}/r-ren", "--s3-endpoint", b.endpoint,
            "--state-dir", state, "--delete", "--json", "-q"]
    for i in range(runs):
        os.rename(f"{src}/{names[i % 2]}", f"{src}/{names[(i + 1) % 2]}")
        drop_dirty()
        ops.append(count_ops(run_timed(plan, b.env).stdout))
        for s, (_, argv) in zip(series, tools):
            s.runs.append(run_timed(argv, b.env))
        sent.append(json.load(open(f"{state}/last-run.json"))["bytes"])
    moves = ops[-1]
    case.checks.append(Check("operations in `plan --json`", ", ".join(f"{n} {k}" for k, n in sorted(moves.items())),
                             "one folder move", all(o == {"move": 1} for o in ops)))
    case.checks.append(Check("file bytes uploaded (reconcile)", f"{max(sent):,}", "0", max(sent) == 0))
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
