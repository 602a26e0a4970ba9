"""reconcile plan and apply: one run each for SOURCE DEST, a mapping, or --all
(reconcile/jobs.py picks and logs the runs), and what each run prints."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Annotated, Optional

import typer

from reconcile.cli.flags import (JOB_FLAGS, AcceptNew, AllOpt, AllowEmpty, AllowNewDest, AllowReverse, BackupDir,
                                 BackupKeep, BwLimit, Checksum, ConfigOpt, Delete, DryRun, Exclude, ExcludeFrom,
                                 Include, JsonOut, KnownHosts, Links, LogFile, LogFormat, MaxDelete, NameArg,
                                 NameEncoding, OptDestArg, Perms, Profile, Quiet, RetryFor, S3Endpoint, SshFind,
                                 SshKey, Sse, SseKey, StateDirOpt, StorageClass, Transfers, Verbose, flag_defaults,
                                 remote_options, run_options, with_flags_of)
from reconcile.cli.guard import guarded
from reconcile.cli.root import command
from reconcile.cli.summary import (not_stored_note, print_delta_note, print_network, print_summary, resumed_line,
                                   unreadable_note)
from reconcile.errors import EXIT_PARTIAL, DestinationFull


def mirror_flags(delete: Delete = False, exclude: Exclude = None, exclude_from: ExcludeFrom = None,
                 include: Include = None, json_out: JsonOut = False, quiet: Quiet = False, verbose: Verbose = False,
                 state_dir: StateDirOpt = None, max_delete: MaxDelete = None, allow_empty_source: AllowEmpty = False,
                 allow_new_destination: AllowNewDest = False, allow_reverse: AllowReverse = False,
                 backup_dir: BackupDir = None, backup_keep: BackupKeep = None, bwlimit: BwLimit = None,
                 links: Links = "skip", checksum: Checksum = False, perms: Perms = False,
                 name_encoding: NameEncoding = False, transfers: Transfers = None, retry_for: RetryFor = "5m",
                 ssh_key: SshKey = None, known_hosts: KnownHosts = None, accept_new_host_key: AcceptNew = False,
                 ssh_find: SshFind = "auto", s3_endpoint: S3Endpoint = None, profile: Profile = None,
                 s3_storage_class: StorageClass = None, s3_sse: Sse = None, s3_sse_kms_key_id: SseKey = None,
                 all_: AllOpt = False, config: ConfigOpt = None, log_file: LogFile = None,
                 log_format: LogFormat = "text") -> None:
    """never called: its signature is the one list of the flags plan and apply share, in --help order"""


@command(short_help="Show what apply would do; changes nothing.",
         example="reconcile plan ~/Pictures /mnt/backup/Pictures --delete")
@with_flags_of(mirror_flags)
def plan(source: Optional[str] = NameArg, dest: Optional[str] = OptDestArg,
         offline: Annotated[bool, typer.Option("--offline", help="plan against the last-known remote state, without connecting")] = False,
         **flags):
    """Show what apply would do. Changes nothing."""
    raise typer.Exit(_jobs("plan", source, dest, {**flags, "offline": offline}))


@command(short_help="Make the remote an exact copy of SOURCE; a killed run resumes next time.",
         example="reconcile apply ~/Pictures sftp://me@nas.local/backup/Pictures --delete")
@with_flags_of(mirror_flags)
def apply(source: Optional[str] = NameArg, dest: Optional[str] = OptDestArg, dry_run: DryRun = False, **flags):
    """Make the remote an exact copy of SOURCE. A killed run resumes next time."""
    raise typer.Exit(_jobs("plan" if dry_run else "apply", source, dest, flags))


def _jobs(command: str, source, dest, flags: dict) -> int:
    """SOURCE DEST, a mapping name or --all, each run logged (reconcile/jobs.py)."""
    from reconcile.jobs import Driver, run_jobs
    from reconcile.logs import LogSettings

    kw = {k: v for k, v in flags.items() if k not in JOB_FLAGS}
    driver = Driver(flag_defaults(plan if command == "plan" else apply),
                    lambda job, all_: _run(command, job.source, job.dest, dict(job.kw), job.name if all_ else None),
                    guarded, typer.BadParameter)
    log = LogSettings(flags["log_file"], flags["log_format"])
    return run_jobs(command, source, dest, flags["all_"], flags["config"], log, kw, driver)


def _run(command: str, source: str, dest: str, kw: dict, mapping: str | None = None) -> int:
    """one run; mapping (under --all) names it on the summary line and in --json."""
    _connect_early(source, dest, kw)
    from reconcile.remotes import forget_early

    try:  # a bad flag or a missing source: the early connection is closed all the same
        from reconcile.engine import Run, exit_word
        from reconcile.report import (ApplyReporter, bytes_line, controls, count, plan_json, plan_summary,
                                      print_plan)

        json_out, quiet, verbose = kw.pop("json_out"), kw.pop("quiet"), kw.pop("verbose")
        tag = f"[{mapping}] " if mapping else ""
        walk_only = kw.pop("walk_only", None)  # reconcile watch: only the paths its events marked
        source_dev = kw.pop("source_dev", None)  # reconcile watch: the source's disk at its start
        known = kw.pop("known", None)  # reconcile watch: what its last clean run left (known.py)
        opts = run_options(kw)
        opts.walk_only, opts.source_dev, opts.known = walk_only, source_dev, known
        reporter = ApplyReporter(verbose=verbose, quiet=quiet, binary_rate=bool(opts.bwlimit))
        run = Run(source, dest, opts, reporter)
    except BaseException:
        forget_early()
        raise
    started = time.monotonic()
    try:
        if command == "plan":
            result = run.plan()
            if json_out:
                print(plan_json(result.source, result.dest, result.plan, controls=controls(opts),
                                unreadable=result.unreadable, mapping=mapping, not_stored=result.not_stored))
            elif not quiet:
                from rich.console import Console

                print_plan(result.plan, Console(), verbose, controls(opts))
            if result.pending_journal:
                reporter.warn(f"an unfinished run has {count(result.pending_journal, 'operation')} left; "
                              "apply finishes them first")
            if verbose:
                print_network(run)
                print_delta_note(run)
            print_summary(f"{tag}plan: {plan_summary(result.plan)}{unreadable_note(result.unreadable)}"
                          f"{not_stored_note(result.not_stored)}", result, started)
            return 0
        reporter.start(0, 0)
        result = run.apply(lambda plan: _progress_of(reporter, plan))
    finally:
        reporter.stop()
        run.close()
        forget_early()
    outcome = result.outcome
    if json_out:
        print(plan_json(result.source, result.dest, result.plan, outcome.results if outcome else {},
                        controls(opts), unreadable=result.unreadable,
                        resumed=(result.resumed_ops, result.resumed.results) if result.resumed else None,
                        mapping=mapping, not_stored=result.not_stored, counted=result.counted))
    word = exit_word(result)
    resumed = resumed_line(result)
    if resumed:
        print(resumed, file=sys.stderr)
    if outcome is None:
        gone = result.resumed.remote_gone
        if gone.startswith(DestinationFull.WHY):
            line = f"{tag}partial: stopped while resuming: {gone}"
        else:
            line = f"{tag}partial: the remote went away while resuming ({gone}); run again later"
    else:
        both = [o for o in (result.resumed, outcome) if o is not None]
        done, failed = (sum(o.count(k) for o in both) for k in ("done", "failed"))
        skipped = sum(o.count("skipped") for o in both) + len(result.unreadable) + len(result.not_stored)
        line = f"{tag}{word}: {done} done"
        touched = sum(1 for i, op in enumerate(result.plan.ops)
                      if op.op == "touch" and outcome.results.get(i, ("",))[0] == "done")
        if touched:
            line += f" ({touched} touched: mtime set, no content sent)"
        if result.resumed and result.resumed.count("done"):
            line += f" ({result.resumed.count('done')} finishing the interrupted run)"
        line += f", {skipped} skipped, {failed} failed; {bytes_line(result.counted)}"
        if outcome.remote_gone:
            if outcome.remote_gone.startswith(DestinationFull.WHY):
                line += f"; stopped: {outcome.remote_gone}; the next run resumes"
            else:
                line += f"; the remote went away ({outcome.remote_gone}); the next run resumes"
        line += unreadable_note(result.unreadable) + not_stored_note(result.not_stored)
    if verbose:
        print_network(run)
        print_delta_note(run)
    print_summary(line, result, started)
    return EXIT_PARTIAL if word == "partial" else 0


def _connect_early(source: str, dest: str, kw: dict) -> None:
    """a run that will connect starts connecting now, while it imports, locks
    and reads its state (issue 21). Not for --offline (never connects), nor
    under reconcile watch (its runs may not list; it opens its own)."""
    if kw.get("offline") or "walk_only" in kw:
        return
    from reconcile.remotes import connect_early

    from reconcile.statedir import last_snapshot_entries

    try:
        options = remote_options(kw)
    except Exception:  # noqa: BLE001 (a bad flag: reported where the run reads it)
        return
    options.expected_entries = last_snapshot_entries(source, dest, kw.get("state_dir"))
    connect_early(dest, options)


@contextlib.contextmanager
def _progress_of(reporter, plan):
    """the progress bar needs the plan's size, known only once planned"""
    reporter.start(len(plan.ops), plan.upload_bytes)
    try:
        yield
    finally:
        reporter.stop()
