"""The command line: reconcile plan | apply | status.

Exit codes: 0 done or nothing to do; 1 error; 2 usage or configuration
error; 3 partial (the journal keeps the rest); 4 refused by a safety guard;
5 another run holds the lock; 130 interrupted (Ctrl-C; the next run resumes).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import sys
import time
import traceback
from typing import Annotated, List, Optional

import typer

from reconcile import units
from reconcile.errors import EXIT_ERROR, EXIT_PARTIAL, ConfigError, ReconcileError
from reconcile.remotes.sftp import findlist
from reconcile.remotes.base import RemoteOptions
from reconcile.restore import TRASH_DIR

app = typer.Typer(add_completion=True, no_args_is_help=True,
                  help="Keep a remote copy of a local folder exactly in step.",
                  pretty_exceptions_enable=False, rich_markup_mode=None, context_settings={"help_option_names": ["-h", "--help"]})

SourceArg = typer.Argument(..., help="local folder to mirror")
DestArg = typer.Argument(..., help="folder, file:///path, sftp://[user@]host[:port]/path or s3://bucket[/prefix]")
# one word instead of SOURCE DEST names a mapping of the config file
NameArg = typer.Argument(None, show_default=False, metavar="SOURCE|MAPPING",
                         help="local folder to mirror, or the name of a mapping in the config file")
OptDestArg = typer.Argument(None, show_default=False, metavar="DEST",
                            help="folder, file:///path, sftp://[user@]host[:port]/path or s3://bucket[/prefix]")


def parse_duration(text: str) -> float:
    """units.parse_duration, its error shown as typer shows a bad flag."""
    try:
        return units.parse_duration(text)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


def parse_rate(text: str) -> float:
    """units.parse_rate, its error shown as typer shows a bad flag."""
    try:
        return units.parse_rate(text)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


def _choice(value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}")
    return value


def _links(value: str) -> str:
    if value not in ("skip", "follow", "store"):
        raise typer.BadParameter(f"--links {value!r}: use skip, follow or store")
    return value


def _options(delete, exclude, max_delete, allow_empty_source, state_dir, transfers, ssh_key,
             known_hosts, accept_new_host_key, retry_for, s3_endpoint, profile, s3_storage_class,
             s3_sse, s3_sse_kms_key_id, offline=False, backup_dir=None, backup_keep=None, bwlimit=None,
             links="skip", checksum=False, perms=False, ssh_find="auto", allow_new_destination=False,
             allow_reverse=False, name_encoding=False, exclude_from=None, include=None):
    from reconcile.engine import RunOptions
    from reconcile.excludes import all_patterns

    if transfers is not None and transfers < 1:
        raise typer.BadParameter("--transfers must be 1 or more")
    if max_delete is not None and max_delete < 0:
        raise typer.BadParameter("--max-delete must be 0 or more")
    remote = RemoteOptions(transfers=transfers, ssh_key=ssh_key, known_hosts=known_hosts,
                           accept_new_host_key=accept_new_host_key, retry_for=parse_duration(retry_for),
                           s3_endpoint=s3_endpoint, profile=profile, storage_class=s3_storage_class,
                           sse=s3_sse, sse_kms_key_id=s3_sse_kms_key_id)
    opts = RunOptions(delete=delete, exclude=all_patterns(exclude, exclude_from, include), max_delete=max_delete,
                      allow_empty_source=allow_empty_source, offline=offline, state_dir=state_dir,
                      remote=remote, backup_dir=backup_dir, backup_keep_days=backup_keep,
                      bwlimit=parse_rate(bwlimit) if bwlimit else None, links=_links(links),
                      checksum=checksum, allow_new_destination=allow_new_destination,
                      allow_reverse=allow_reverse)
    remote.extra["perms"] = perms
    remote.extra["ssh_find"] = _choice(ssh_find, findlist.WAYS)
    remote.extra["name_encoding"] = name_encoding
    return opts


def _version(value: bool) -> None:
    if value:
        from reconcile import __version__

        print(f"reconcile {__version__}")
        raise typer.Exit()


@app.callback()
def _top(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="print the version and exit")] = False) -> None:
    """Keep a remote copy of a local folder exactly in step."""


# the flags plan and apply share, spelled once; --help shows them in these panels
GUARDS, CONTROLS, CONNECTION, SFTP, S3, JOBS = ("Safety guards", "Controls", "Connection", "SFTP", "S3",
                                                "Config file and logs")
PANELS = ("Options", GUARDS, CONTROLS, CONNECTION, SFTP, S3, JOBS)
Delete = Annotated[bool, typer.Option("--delete", help="mirror deletions (without it the remote keeps files deleted locally)")]
Exclude = Annotated[Optional[List[str]], typer.Option("--exclude", metavar="PATTERN", help="skip paths matching this gitignore-style pattern (repeatable)")]
ExcludeFrom = Annotated[Optional[List[str]], typer.Option("--exclude-from", metavar="FILE", help="read --exclude patterns from FILE, one a line (# comments)")]
Include = Annotated[Optional[List[str]], typer.Option("--include", metavar="PATTERN", help="send paths matching PATTERN even if an --exclude matched them (not inside an excluded folder)")]
JsonOut = Annotated[bool, typer.Option("--json", help="print one JSON document on stdout")]
StateDirOpt = Annotated[Optional[str], typer.Option("--state-dir", metavar="DIR", help="where snapshot, journal and lock live (default: one folder per pair in the user's state folder)")]
MaxDelete = Annotated[Optional[int], typer.Option("--max-delete", metavar="N", rich_help_panel=GUARDS, help="refuse plans deleting more than N files")]
AllowEmpty = Annotated[bool, typer.Option("--allow-empty-source", rich_help_panel=GUARDS, help="allow an empty source to empty the remote")]
AllowNewDest = Annotated[bool, typer.Option("--allow-new-destination", rich_help_panel=GUARDS, help="start again a destination that held files at the last run and is now missing, empty or on another disk")]
AllowReverse = Annotated[bool, typer.Option("--allow-reverse", rich_help_panel=GUARDS, help="copy into a folder that is the SOURCE of another pair that ran before")]
Quiet = Annotated[bool, typer.Option("-q", "--quiet", help="only warnings, errors and the summary line")]
Verbose = Annotated[bool, typer.Option("-v", "--verbose", help="every operation, and tracebacks on bugs")]
Transfers = Annotated[Optional[int], typer.Option("--transfers", metavar="N", rich_help_panel=CONNECTION, help="parallel transfers (default: local 4, sftp 4, s3 16)")]
SshKey = Annotated[Optional[str], typer.Option("--ssh-key", metavar="FILE", rich_help_panel=SFTP, help="SSH private key file")]
KnownHosts = Annotated[Optional[str], typer.Option("--known-hosts", metavar="FILE", rich_help_panel=SFTP, help="known_hosts file (default ~/.ssh/known_hosts)")]
AcceptNew = Annotated[bool, typer.Option("--accept-new-host-key", rich_help_panel=SFTP, help="trust and record an unknown SSH host key")]
RetryFor = Annotated[str, typer.Option("--retry-for", metavar="DURATION", rich_help_panel=CONNECTION, help="keep retrying a lost connection this long (30s, 5m, 1h)")]
S3Endpoint = Annotated[Optional[str], typer.Option("--s3-endpoint", metavar="URL", rich_help_panel=S3, help="S3-compatible endpoint URL (or AWS_ENDPOINT_URL)")]
Profile = Annotated[Optional[str], typer.Option("--profile", metavar="NAME", rich_help_panel=S3, help="AWS profile")]
StorageClass = Annotated[Optional[str], typer.Option("--s3-storage-class", metavar="CLASS", rich_help_panel=S3, help="e.g. STANDARD_IA, GLACIER_IR")]
Sse = Annotated[Optional[str], typer.Option("--s3-sse", metavar="AES256|aws:kms", rich_help_panel=S3, help="server-side encryption of every write")]
SseKey = Annotated[Optional[str], typer.Option("--s3-sse-kms-key-id", metavar="KEY", rich_help_panel=S3, help="KMS key id for --s3-sse aws:kms")]
BackupDir = Annotated[Optional[str], typer.Option("--backup-dir", metavar="NAME", rich_help_panel=CONTROLS, help="move what is overwritten or deleted to this folder on the destination (e.g. .reconcile-trash)")]
BackupKeep = Annotated[Optional[float], typer.Option("--backup-keep", metavar="DAYS", rich_help_panel=CONTROLS, help="prune trash run folders older than DAYS")]
BwLimit = Annotated[Optional[str], typer.Option("--bwlimit", metavar="RATE", rich_help_panel=CONTROLS, help="bytes per second for all transfers together (4M, 500K; K and M are 1024 and 1024²)")]
Links = Annotated[str, typer.Option("--links", metavar="skip|follow|store", rich_help_panel=CONTROLS, help="symlinks: leave out, copy what they point to, or make links")]
Checksum = Annotated[bool, typer.Option("--checksum", rich_help_panel=CONTROLS, help="compare content by xxh3, not size and mtime")]
Perms = Annotated[bool, typer.Option("--perms", rich_help_panel=CONTROLS, help="keep file permissions on the destination")]
NameEncoding = Annotated[bool, typer.Option("--name-encoding", rich_help_panel=CONTROLS, help="store names a USB disk forbids (a:b, what?) as rclone does: a：b, what？ (restore maps them back)")]
SshFind = Annotated[str, typer.Option("--ssh-find", metavar="auto|always|never", rich_help_panel=SFTP, help="list a large tree by running find on the server")]
AllOpt = Annotated[bool, typer.Option("--all", rich_help_panel=JOBS, help="every mapping of the config file")]
ConfigOpt = Annotated[Optional[str], typer.Option("--config", metavar="FILE", envvar="RECONCILE_CONFIG", rich_help_panel=JOBS, help="config file (default: the platform's config folder)")]
LogFile = Annotated[Optional[str], typer.Option("--log-file", metavar="FILE", rich_help_panel=JOBS, help="append log lines here (rotated at 10 MB, 5 kept)")]
LogFormat = Annotated[str, typer.Option("--log-format", metavar="text|json", rich_help_panel=JOBS, callback=lambda v: _choice(v, ("text", "json")), help="json: one object per line")]
DryRun = Annotated[bool, typer.Option("-n", "--dry-run", help="show what would be done and change nothing (the same as plan)")]


class GroupedCommand(typer.core.TyperCommand):
    """plain --help with the options in panels (typer draws panels only with rich markup)."""

    def format_options(self, ctx, formatter) -> None:
        args, groups = [], {p: [] for p in PANELS}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                args.append(record)
            else:
                groups.setdefault(getattr(param, "rich_help_panel", None) or "Options", []).append(record)
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl(args)
        for title, rows in groups.items():
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def command(name: str | None = None, example: str = "", **kw):
    """app.command with grouped options, the whole first line as the short help, and an example."""
    return app.command(name, cls=GroupedCommand, epilog=f"\b\nExample:\n  {example}" if example else None, **kw)


# the flags that pick and log runs rather than shape one
JOB_FLAGS = ("source", "dest", "all_", "config", "log_file", "log_format")


def _run(command: str, source: str, dest: str, kw: dict, mapping: str | None = None) -> int:
    """one run; mapping (under --all) names it on the summary line and in --json."""
    from reconcile.engine import Run, exit_word
    from reconcile.report import (ApplyReporter, bytes_line, controls, count, plan_json, plan_summary,
                                  print_plan)

    json_out, quiet, verbose = kw.pop("json_out"), kw.pop("quiet"), kw.pop("verbose")
    tag = f"[{mapping}] " if mapping else ""
    opts = _options(**kw)
    reporter = ApplyReporter(verbose=verbose, quiet=quiet, binary_rate=bool(opts.bwlimit))
    run = Run(source, dest, opts, reporter)
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
            _summary(f"{tag}plan: {plan_summary(result.plan)}{unreadable_note(result.unreadable)}"
                     f"{not_stored_note(result.not_stored)}", result, started)
            return 0
        reporter.start(0, 0)
        result = run.apply(lambda plan: _progress_of(reporter, plan))
    finally:
        reporter.stop()
        run.close()
    outcome = result.outcome
    if json_out:
        print(plan_json(result.source, result.dest, result.plan, outcome.results if outcome else {},
                        controls(opts), unreadable=result.unreadable,
                        resumed=(result.resumed_ops, result.resumed.results) if result.resumed else None,
                        mapping=mapping, not_stored=result.not_stored, counted=result.counted))
    word = exit_word(result)
    resumed = _resumed_line(result)
    if resumed:
        print(resumed, file=sys.stderr)
    if outcome is None:
        line = f"{tag}partial: the remote went away while resuming ({result.resumed.remote_gone}); run again later"
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
            line += f"; the remote went away ({outcome.remote_gone}); the next run resumes"
        line += unreadable_note(result.unreadable) + not_stored_note(result.not_stored)
    _summary(line, result, started)
    return EXIT_PARTIAL if word == "partial" else 0


RESUMED_SHOWN = 10  # operations named on the resumed: line; -v and --json list them all


def _resumed_line(result) -> str:
    """one line naming what this run finished for an interrupted one."""
    from reconcile.report import count, printable

    if not result.resumed:
        return ""
    done = [op for i, op in enumerate(result.resumed_ops)
            if result.resumed.results.get(i, ("",))[0] == "done" and op.reason != "temp"]
    if not done:
        return ""
    named = ", ".join(f"{op.op} {printable(op.path)}" for op in done[:RESUMED_SHOWN])
    more = f" and {len(done) - RESUMED_SHOWN} more" if len(done) > RESUMED_SHOWN else ""
    return f"resumed: finished {count(len(done), 'operation')} of the interrupted run: {named}{more}"


UNREADABLE_SHOWN = 3  # in the summary line; the warnings above it name every one


def unreadable_note(unreadable: list[tuple[str, str]]) -> str:
    """the summary line's account of what could not be read, and what to do."""
    if not unreadable:
        return ""
    from reconcile.report import printable

    named = ", ".join(f"{printable(p)} ({why})" for p, why in unreadable[:UNREADABLE_SHOWN])
    more = f" and {len(unreadable) - UNREADABLE_SHOWN} more" if len(unreadable) > UNREADABLE_SHOWN else ""
    return (f"; not backed up, could not be read: {named}{more}; "
            "fix their permissions (or run as their owner) and run again")


def not_stored_note(not_stored: list[tuple[str, str]]) -> str:
    """what the destination cannot hold; the warnings above say why, one by one"""
    if not not_stored:
        return ""
    return f"; {len(not_stored)} not stored: the destination cannot hold them (see the warnings above)"


@contextlib.contextmanager
def _progress_of(reporter, plan):
    """the progress bar needs the plan's size, known only once planned"""
    reporter.start(len(plan.ops), plan.upload_bytes)
    try:
        yield
    finally:
        reporter.stop()


def _summary(line: str, result, started: float) -> None:
    w = result.walk
    from reconcile.report import count

    extra = []
    if w.symlinks_skipped:
        extra.append(f"{count(w.symlinks_skipped, 'symlink')} skipped")
    if w.specials_skipped:
        extra.append(f"{count(len(w.specials_skipped), 'special file')} skipped")
    if w.links_not_followed:
        extra.append(f"{count(len(w.links_not_followed), 'symlink')} not followed")
    tail = f" [{'; '.join(extra)}]" if extra else ""
    # the details first: the summary line is the run's last word
    for u in w.unreadable:
        print(f"warning: cannot read {u}; its remote copy is left alone", file=sys.stderr)
    for link in w.links_not_followed[:20]:
        print(f"warning: symlink not followed: {link}", file=sys.stderr)
    for sp in w.specials_skipped[:20]:
        print(f"warning: skipped special file {sp}", file=sys.stderr)
    print(f"{line}{tail} ({time.monotonic() - started:.1f}s)", file=sys.stderr, flush=True)


@command(short_help="Show what apply would do; changes nothing.",
         example="reconcile plan ~/Pictures /mnt/backup/Pictures --delete")
def plan(source: Optional[str] = NameArg, dest: Optional[str] = OptDestArg,
         offline: Annotated[bool, typer.Option("--offline", help="plan against the last-known remote state, without connecting")] = False,
         delete: Delete = False, exclude: Exclude = None, exclude_from: ExcludeFrom = None, include: Include = None,
         json_out: JsonOut = False, quiet: Quiet = False, verbose: Verbose = False, state_dir: StateDirOpt = None,
         max_delete: MaxDelete = None, allow_empty_source: AllowEmpty = False,
         allow_new_destination: AllowNewDest = False, allow_reverse: AllowReverse = False,
         backup_dir: BackupDir = None, backup_keep: BackupKeep = None, bwlimit: BwLimit = None,
         links: Links = "skip", checksum: Checksum = False, perms: Perms = False, name_encoding: NameEncoding = False,
         transfers: Transfers = None, retry_for: RetryFor = "5m",
         ssh_key: SshKey = None, known_hosts: KnownHosts = None, accept_new_host_key: AcceptNew = False,
         ssh_find: SshFind = "auto", s3_endpoint: S3Endpoint = None, profile: Profile = None,
         s3_storage_class: StorageClass = None, s3_sse: Sse = None, s3_sse_kms_key_id: SseKey = None,
         all_: AllOpt = False, config: ConfigOpt = None, log_file: LogFile = None, log_format: LogFormat = "text"):
    """Show what apply would do. Changes nothing."""
    kw = {k: v for k, v in locals().items() if k not in JOB_FLAGS}
    raise typer.Exit(_jobs("plan", source, dest, all_, config, log_file, log_format, kw))


@command(short_help="Make the remote an exact copy of SOURCE; a killed run resumes next time.",
         example="reconcile apply ~/Pictures sftp://me@nas.local/backup/Pictures --delete")
def apply(source: Optional[str] = NameArg, dest: Optional[str] = OptDestArg,
          dry_run: DryRun = False,
          delete: Delete = False, exclude: Exclude = None, exclude_from: ExcludeFrom = None, include: Include = None,
          json_out: JsonOut = False, quiet: Quiet = False, verbose: Verbose = False, state_dir: StateDirOpt = None,
          max_delete: MaxDelete = None, allow_empty_source: AllowEmpty = False,
          allow_new_destination: AllowNewDest = False, allow_reverse: AllowReverse = False,
          backup_dir: BackupDir = None, backup_keep: BackupKeep = None, bwlimit: BwLimit = None,
          links: Links = "skip", checksum: Checksum = False, perms: Perms = False, name_encoding: NameEncoding = False,
          transfers: Transfers = None, retry_for: RetryFor = "5m",
          ssh_key: SshKey = None, known_hosts: KnownHosts = None, accept_new_host_key: AcceptNew = False,
          ssh_find: SshFind = "auto", s3_endpoint: S3Endpoint = None, profile: Profile = None,
          s3_storage_class: StorageClass = None, s3_sse: Sse = None, s3_sse_kms_key_id: SseKey = None,
          all_: AllOpt = False, config: ConfigOpt = None, log_file: LogFile = None, log_format: LogFormat = "text"):
    """Make the remote an exact copy of SOURCE. A killed run resumes next time."""
    kw = {k: v for k, v in locals().items() if k not in JOB_FLAGS and k != "dry_run"}
    raise typer.Exit(_jobs("plan" if dry_run else "apply", source, dest, all_, config, log_file, log_format, kw))


def _jobs(command: str, source, dest, all_: bool, config, log_file, log_format: str, kw: dict) -> int:
    """SOURCE DEST, a mapping name or --all, each run logged (reconcile/jobs.py)."""
    from reconcile.jobs import Driver, run_jobs
    from reconcile.logs import LogSettings

    driver = Driver(flag_defaults(plan if command == "plan" else apply),
                    lambda job, all_: _run(command, job.source, job.dest, dict(job.kw), job.name if all_ else None),
                    _guarded, typer.BadParameter)
    return run_jobs(command, source, dest, all_, config, LogSettings(log_file, log_format), kw, driver)


def flag_defaults(command) -> dict:
    """the defaults of a typer command's flags, to tell given flags apart."""
    return {name: p.default for name, p in inspect.signature(command).parameters.items()}


@command(short_help="Last run, pending work and snapshot of a pair, a mapping, or --all.",
         example="reconcile status ~/Pictures /mnt/backup/Pictures")
def status(source: Optional[str] = NameArg, dest: Optional[str] = OptDestArg,
           state_dir: Annotated[Optional[str], typer.Option("--state-dir", metavar="DIR", help="the pair's state folder, if apply ran with --state-dir")] = None,
           json_out: Annotated[bool, typer.Option("--json", help="print one JSON document: last_run, pending_operations, snapshot, state_dir")] = False,
           all_: AllOpt = False, config: ConfigOpt = None):
    """Last run, pending work and snapshot of one SOURCE+DEST pair, a mapping, or --all."""
    from reconcile.jobs import status_jobs

    def show(job) -> int:
        return _status(job.source, job.dest, job.kw.get("state_dir"), json_out)

    raise typer.Exit(_guarded(lambda: status_jobs(source, dest, all_, config, state_dir, json_out, show), False))


def _status(source: str, dest: str, state_dir: str | None, json_out: bool) -> int:
    from reconcile import journal, snapshot
    from reconcile.statedir import StateDir, display_url

    state = StateDir.for_pair(os.path.abspath(os.path.expanduser(source)), dest, state_dir)
    info: dict = {"source": os.path.abspath(source), "dest": display_url(dest), "state_dir": state.path}
    try:
        with open(state.last_run, "rb") as f:
            info["last_run"] = json.loads(f.read())
    except (OSError, ValueError):
        info["last_run"] = None
    try:
        p = journal.load(state.journal)
        info["pending_operations"] = len(p.remaining) if p else 0
    except journal.CorruptJournal as exc:
        info["pending_operations"] = None
        info["journal_error"] = str(exc)
    if os.path.exists(state.snapshot):
        st = os.stat(state.snapshot)
        info["snapshot"] = {"age_seconds": round(time.time() - st.st_mtime), "bytes": st.st_size}
        try:
            snapshot.verify(state.snapshot)
        except snapshot.CorruptState as exc:
            info["snapshot"]["error"] = str(exc)
    else:
        info["snapshot"] = None
    if json_out:
        print(json.dumps(info))
        return 0
    lr = info["last_run"]
    print(f"{info['source']} -> {info['dest']}")
    if lr:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(lr["ended"]))
        print(f"last run: {when}, {lr['result']}, {lr['ended'] - lr['started']:.1f}s, "
              f"{lr['done']} done, {lr['failed']} failed, {lr['bytes']} bytes sent"
              + ("; the next apply finishes it" if lr["result"] == "interrupted" else ""))
    else:
        print("last run: never")
    print(f"pending operations: {info['pending_operations']}")
    snap = info["snapshot"]
    print(f"snapshot: {snap['bytes']} bytes, {snap['age_seconds']}s old" if snap else "snapshot: none")
    return 0


def _guarded(fn, verbose: bool | None) -> int:
    """User mistakes and remote failures end in one line and an exit code."""
    try:
        return fn()
    except ReconcileError as exc:
        print(f"reconcile: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("reconcile: interrupted; the next run resumes where this one stopped", file=sys.stderr)
        return 130
    except typer.BadParameter:
        raise
    except OSError as exc:  # the state folder or a local path the OS refused
        where = exc.filename or ""
        print(f"reconcile: {exc.strerror or exc}: {where}; check that folder (free space, permissions) "
              "or pass --state-dir DIR", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a bug: say so briefly, details with -v
        if verbose:
            traceback.print_exc()
        print(f"reconcile: internal error: {type(exc).__name__}: {exc} (run with -v for details)",
              file=sys.stderr)
        return EXIT_ERROR


@command(short_help="Read-only audit that the remote matches SOURCE (exit 0 equal, 1 differences).",
         example="reconcile verify ~/Pictures sftp://me@nas.local/backup/Pictures --hash")
def verify(source: Optional[str] = NameArg, dest: Optional[str] = OptDestArg,
           by_hash: Annotated[bool, typer.Option("--hash", help="read the remote content back and compare xxh3")] = False,
           repair: Annotated[bool, typer.Option("--repair", help="with --hash (implied): re-send the files whose remote content differs")] = False,
           delete: Annotated[bool, typer.Option("--delete", help="count files only on the remote as differences (the mirror deletes)")] = False,
           exclude: Exclude = None, exclude_from: ExcludeFrom = None, include: Include = None,
           json_out: JsonOut = False, state_dir: StateDirOpt = None,
           transfers: Transfers = None, ssh_key: SshKey = None, known_hosts: KnownHosts = None,
           retry_for: RetryFor = "5m", s3_endpoint: S3Endpoint = None, profile: Profile = None,
           links: Annotated[str, typer.Option("--links", callback=_links, metavar="skip|follow|store",
                                              help="symlinks as the mirror treats them: skip, follow or store")] = "skip",
           name_encoding: NameEncoding = False,
           all_: AllOpt = False, config: ConfigOpt = None):
    """Read-only audit that the remote matches SOURCE: exit 0 when equal, 1 with the differences."""
    from reconcile.jobs import Driver, verify_jobs

    kw = {k: v for k, v in locals().items() if k not in JOB_FLAGS}
    driver = Driver(flag_defaults(verify), _verify_one, _guarded, typer.BadParameter)
    raise typer.Exit(_guarded(lambda: verify_jobs(source, dest, all_, config, kw, driver), False))


def _verify_one(job, all_: bool) -> int:
    from reconcile.verify import run

    options = RemoteOptions(transfers=job.kw["transfers"], ssh_key=job.kw["ssh_key"],
                            known_hosts=job.kw["known_hosts"], retry_for=parse_duration(job.kw["retry_for"]),
                            s3_endpoint=job.kw["s3_endpoint"], profile=job.kw["profile"])
    options.extra["name_encoding"] = bool(job.kw.get("name_encoding"))
    return run(job.source, job.dest, options, {**job.kw, "mapping": job.name})


config_app = typer.Typer(help="The config file of named mappings.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("check", cls=GroupedCommand, epilog="\b\nExample:\n  reconcile config check")
def config_check(config: ConfigOpt = None, json_out: JsonOut = False):
    """Report each problem of the config file with its line and the fix (exit 2 when any)."""
    from reconcile.config import check_command

    raise typer.Exit(_guarded(lambda: check_command(config, json_out), False))


# the flags only restore has; the shared ones are above
Paths = Annotated[Optional[List[str]], typer.Option("--path", metavar="PATH", help="restore only this subtree (repeatable)")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="replace local files that differ")]
RestoreDryRun = Annotated[bool, typer.Option("--dry-run", help="show what would be fetched; change nothing")]
FromTrash = Annotated[Optional[str], typer.Option(
    "--from-trash", metavar="RUN", help="restore what the remote trash kept from RUN (any unique prefix)")]
ListTrash = Annotated[bool, typer.Option("--list-trash", help="list the trash runs that can be restored")]
TrashDir = Annotated[str, typer.Option("--backup-dir", metavar="NAME", help="the trash folder under the remote root")]
SnapState = Annotated[Optional[str], typer.Option(
    "--state-dir", metavar="DIR", help="state folder of the SOURCE+DEST pair: its snapshot vouches for files the remote has no hash for (default: found as apply finds it)")]


@command("restore", short_help="Fetch the remote copy (or one run of its trash) back into a folder, verified.",
         example="reconcile restore sftp://me@nas.local/backup/Pictures ~/Pictures-restored")
def restore_command(
        remote_url: str = typer.Argument(..., help="folder, sftp://... or s3://... to restore from"),
        local_dir: Optional[str] = typer.Argument(None, help="folder to restore into"),
        path: Paths = None, overwrite: Overwrite = False, dry_run: RestoreDryRun = False, json_out: JsonOut = False,
        from_trash: FromTrash = None, list_trash: ListTrash = False, backup_dir: TrashDir = TRASH_DIR,
        state_dir: SnapState = None, quiet: Quiet = False, verbose: Verbose = False,
        transfers: Transfers = None, ssh_key: SshKey = None, known_hosts: KnownHosts = None,
        accept_new_host_key: AcceptNew = False, retry_for: RetryFor = "5m", s3_endpoint: S3Endpoint = None,
        profile: Profile = None, name_encoding: NameEncoding = False):
    """Fetch the remote copy (or one run of its trash) back into LOCAL_DIR, verified."""
    from reconcile.restore import RestoreOptions
    from reconcile.restore_output import run_restore

    if transfers is not None and transfers < 1:
        raise typer.BadParameter("--transfers must be 1 or more")
    remote = RemoteOptions(transfers=transfers, ssh_key=ssh_key, known_hosts=known_hosts,
                           accept_new_host_key=accept_new_host_key, retry_for=parse_duration(retry_for),
                           s3_endpoint=s3_endpoint, profile=profile)
    if state_dir is None:  # the pair's own state, found the way apply finds it
        from reconcile.pairs import pair_state_for_dest

        state_dir = pair_state_for_dest(remote_url, local_dir)
    remote.extra["name_encoding"] = name_encoding  # names stored as rclone does: restored as they were
    opts = RestoreOptions(local_dir or "", list(path or []), overwrite, dry_run, from_trash, backup_dir,
                          state_dir, remote)
    raise typer.Exit(_guarded(
        lambda: run_restore(remote_url, local_dir, opts, json_out, list_trash, quiet, verbose), verbose))


def main() -> None:
    try:
        app()
        code = 0
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    _leave(code)


def _leave(code: int) -> None:
    """exit without tearing the interpreter down: by now every state file is
    synced and closed, and freeing a big run's objects one by one took about
    0.1 s of a 1.8 s no-change run. Output and logs are flushed first."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # a reader that went away, as `reconcile plan | head`
    os._exit(code)
