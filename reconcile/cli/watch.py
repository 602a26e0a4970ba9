"""reconcile watch: runs until stopped; each run an apply of the paths file
events marked (reconcile/watch/ does the watching and deciding)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from reconcile.cli.flags import (JOB_FLAGS, AcceptNew, AllOpt, AllowEmpty, AllowNewDest, AllowReverse, BackupDir,
                                 BackupKeep, BwLimit, Checksum, ConfigOpt, Delete, Exclude, ExcludeFrom, Include,
                                 KnownHosts, Links, LogFile, LogFormat, MaxDelete, NameArg, NameEncoding, OptDestArg,
                                 Perms, Profile, Quiet, RetryFor, S3Endpoint, SshFind, SshKey, Sse, SseKey,
                                 StateDirOpt, StorageClass, Transfers, Verbose, flag_defaults, parse_duration)
from reconcile.cli.guard import guarded
from reconcile.cli.mirror import _run
from reconcile.cli.root import command

WATCH_FLAGS = ("quiet_for", "max_wait", "full_rescan", "rescan_unwatched")


@command(short_help="Mirror changes as they happen: file events start a run that walks only what changed.",
         example="reconcile watch ~/Pictures sftp://me@nas.local/backup/Pictures --delete")
def watch(source: Optional[str] = NameArg, dest: Optional[str] = OptDestArg,
          quiet_for: Annotated[str, typer.Option("--quiet-for", metavar="DURATION", help="run once no file event came for this long")] = "1s",
          max_wait: Annotated[str, typer.Option("--max-wait", metavar="DURATION", help="run at the latest this long after the first event, even if events keep coming")] = "10s",
          full_rescan: Annotated[str, typer.Option("--full-rescan", metavar="DURATION", help="walk the whole tree about this often (randomised), in case an event was missed")] = "1h",
          rescan_unwatched: Annotated[str, typer.Option("--rescan-unwatched", metavar="DURATION", help="rescan folders that could not be watched (out of inotify watches) this often")] = "1m",
          delete: Delete = False, exclude: Exclude = None, exclude_from: ExcludeFrom = None, include: Include = None,
          quiet: Quiet = False, verbose: Verbose = False, state_dir: StateDirOpt = None,
          max_delete: MaxDelete = None, allow_empty_source: AllowEmpty = False,
          allow_new_destination: AllowNewDest = False, allow_reverse: AllowReverse = False,
          backup_dir: BackupDir = None, backup_keep: BackupKeep = None, bwlimit: BwLimit = None,
          links: Links = "skip", checksum: Checksum = False, perms: Perms = False, name_encoding: NameEncoding = False,
          transfers: Transfers = None, retry_for: RetryFor = "30s",
          ssh_key: SshKey = None, known_hosts: KnownHosts = None, accept_new_host_key: AcceptNew = False,
          ssh_find: SshFind = "auto", s3_endpoint: S3Endpoint = None, profile: Profile = None,
          s3_storage_class: StorageClass = None, s3_sse: Sse = None, s3_sse_kms_key_id: SseKey = None,
          all_: AllOpt = False, config: ConfigOpt = None, log_file: LogFile = None, log_format: LogFormat = "text"):
    """Mirror changes as they happen (runs until stopped; see README "Watch"). Each run is an apply."""
    kw = {k: v for k, v in locals().items() if k not in JOB_FLAGS + WATCH_FLAGS}
    kw["json_out"] = False
    from reconcile.jobs import Driver
    from reconcile.logs import LogSettings
    from reconcile.watch.command import watch_jobs
    from reconcile.watch.loop import WatchSettings

    settings = WatchSettings(quiet_for=parse_duration(quiet_for, "--quiet-for"),
                             max_wait=parse_duration(max_wait, "--max-wait"),
                             full_rescan=_every(full_rescan, "--full-rescan"),
                             unwatched_every=_every(rescan_unwatched, "--rescan-unwatched"))
    driver = Driver(flag_defaults(watch), lambda job, all_: _run("apply", job.source, job.dest, dict(job.kw),
                                                                  job.name if all_ else None),
                    guarded, typer.BadParameter)
    raise typer.Exit(watch_jobs(source, dest, all_, config, LogSettings(log_file, log_format), kw, driver, settings))


def _every(text: str, flag: str) -> float:
    """a period: 0 (say, meant as 'never') would walk the whole tree again and again"""
    seconds = parse_duration(text, flag)
    if seconds <= 0:
        raise typer.BadParameter(f"{flag} must be more than 0, e.g. {flag} 1h; it cannot be turned off")
    return seconds
