"""reconcile verify: the read-only audit (reconcile/verify.py), for a pair,
a mapping or --all, and what it prints."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, List, Optional

import typer

from reconcile.cli.flags import (JOB_FLAGS, AllOpt, ConfigOpt, Exclude, ExcludeFrom, JsonOut, KnownHosts,
                                 NameArg, NameEncoding, OptDestArg, Profile, RetryFor, S3Endpoint, SshKey,
                                 StateDirOpt, Transfers, flag_defaults, links_choice, remote_options)
from reconcile.cli.guard import read_only
from reconcile.cli.root import command
from reconcile.shown import json_text, printable

if TYPE_CHECKING:
    from reconcile.remotes.base import RemoteOptions
    from reconcile.verify import VerifyResult


# --include as verify means it: it compares, it sends nothing
VerifyInclude = Annotated[Optional[List[str]], typer.Option(
    "--include", metavar="PATTERN",
    help="compare paths matching PATTERN even if an --exclude matched them (not inside an excluded folder)")]


@command(short_help="Read-only audit that the remote matches SOURCE (exit 0 equal, 1 differences).",
         example="reconcile verify ~/Pictures sftp://me@nas.local/backup/Pictures --hash")
def verify(source: Optional[str] = NameArg, dest: Optional[str] = OptDestArg,
           by_hash: Annotated[bool, typer.Option("--hash", help="read the remote content back and compare xxh3")] = False,
           repair: Annotated[bool, typer.Option("--repair", help="with --hash (implied): re-send the files whose remote content differs")] = False,
           delete: Annotated[bool, typer.Option("--delete", help="count files only on the remote as differences (the mirror deletes)")] = False,
           exclude: Exclude = None, exclude_from: ExcludeFrom = None, include: VerifyInclude = None,
           json_out: JsonOut = False, state_dir: StateDirOpt = None,
           transfers: Transfers = None, ssh_key: SshKey = None, known_hosts: KnownHosts = None,
           retry_for: RetryFor = "5m", s3_endpoint: S3Endpoint = None, profile: Profile = None,
           links: Annotated[str, typer.Option("--links", callback=links_choice, metavar="skip|follow|store",
                                              help="symlinks as the mirror treats them: skip, follow or store")] = "skip",
           name_encoding: NameEncoding = False,
           all_: AllOpt = False, config: ConfigOpt = None):
    """Read-only audit that the remote matches SOURCE: exit 0 when equal, 1 with the differences."""
    from reconcile.jobs import Driver, verify_jobs

    kw = {k: v for k, v in locals().items() if k not in JOB_FLAGS}
    driver = Driver(flag_defaults(verify), _verify_one, read_only, typer.BadParameter)
    raise typer.Exit(read_only(lambda: verify_jobs(source, dest, all_, config, kw, driver), False))


def _verify_one(job, all_: bool) -> int:
    return run(job.source, job.dest, remote_options(job.kw), {**job.kw, "mapping": job.name})


# --- what it prints ------------------------------------------------------------------------


def to_json(result: VerifyResult, mapping: str | None = None) -> str:
    return json_text({
        **({"mapping": mapping} if mapping else {}),
        "source": result.source, "dest": result.dest, "equal": result.equal,
        "checked": {"files": result.files, "hashed": result.hashed, "hashed_bytes": result.hashed_bytes},
        "differences": [d.to_json() for d in result.differences],
        "extra_kept": [d.to_json() for d in result.extra_kept],
        "warnings": result.warnings,
        "not_stored": [{"path": p, "reason": why} for p, why in result.not_stored],
        "repaired": [printable(p) for p in result.repaired],
    })


def text_lines(result: VerifyResult) -> list[str]:
    lines = [f"{d.what:<8} {d.path}  ({d.detail})" for d in result.differences]
    lines += [f"extra    {d.path}  (kept: the mirror does not delete)" for d in result.extra_kept]
    return lines


def summary_line(result: VerifyResult) -> str:
    """the last line: what was found, and how to fix it."""
    from reconcile.report import count, human_bytes

    how = f", {result.hashed} read back ({human_bytes(result.hashed_bytes)})" if result.hashed else ""
    n = len(result.differences)
    word = "equal" if result.equal else f"{n} {'difference' if n == 1 else 'differences'}"
    if not n and result.not_stored:
        word = "no differences in what the destination can hold"
    line = f"verify: {word}; {count(result.files, 'file')} compared{how} ({result.seconds:.1f}s)"
    if result.repaired:
        line += f"; re-sent {len(result.repaired)} that differed in content"
    content = sum(1 for d in result.differences if d.what == "content")
    if content:
        line += f"; `reconcile verify --hash --repair` re-sends the {content} that differ in content"
    if result.dest_missing:  # apply refuses a destination that held files and is gone: mount it first
        line += "; the destination folder is not there: mount its disk (or correct the path) and verify again"
    elif n > content:
        line += f"; `reconcile apply` sends the other {n - content}"
    if result.not_stored:  # apply cannot send these: the warnings above say what to do
        line += (f"; {len(result.not_stored)} not stored: the destination cannot hold them "
                 "(see the warnings above)")
    return line


def run(source: str, dest: str, options: RemoteOptions, kw: dict) -> int:
    """one verify: print the differences (or JSON) and the summary; 0 or 1."""
    from reconcile.excludes import all_patterns
    from reconcile.report import ApplyReporter
    from reconcile.verify import resend, verify as audit

    repair = kw.get("repair", False)
    patterns = all_patterns(kw.get("exclude"), kw.get("exclude_from"), kw.get("include"))
    result = audit(source, dest, options, patterns, kw["by_hash"] or repair, kw["delete"],
                   kw.get("state_dir"), kw.get("links") or "skip")
    if repair and result.content_paths:
        resend(source, dest, options, result, kw.get("state_dir"), ApplyReporter(quiet=True))
    if kw["json_out"]:
        print(to_json(result, kw.get("mapping")))
    else:
        for line in text_lines(result):
            print(line)
    for w in result.warnings + [why for _, why in result.not_stored]:
        print(f"warning: {w}", file=sys.stderr)
    print(summary_line(result), file=sys.stderr, flush=True)
    return 0 if result.equal else 1

