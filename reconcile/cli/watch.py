"""reconcile watch: runs until stopped; each run an apply of the paths file
events marked (reconcile/watch/ does the watching and deciding)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from reconcile.cli.flags import JOB_FLAGS, NameArg, OptDestArg, flag_defaults, parse_duration, with_flags_of
from reconcile.cli.guard import guarded
from reconcile.cli.mirror import _run, mirror_flags
from reconcile.cli.root import command


@command(short_help="Mirror changes as they happen: file events start a run that walks only what changed.",
         example="reconcile watch ~/Pictures sftp://me@nas.local/backup/Pictures --delete")
# apply's flags, less --json, with --retry-for 30s by default
@with_flags_of(mirror_flags, leave_out=("json_out",), defaults={"retry_for": "30s"})
def watch(source: Optional[str] = NameArg, dest: Optional[str] = OptDestArg,
          quiet_for: Annotated[str, typer.Option("--quiet-for", metavar="DURATION", help="run once no file event came for this long")] = "1s",
          max_wait: Annotated[str, typer.Option("--max-wait", metavar="DURATION", help="run at the latest this long after the first event, even if events keep coming")] = "10s",
          full_rescan: Annotated[str, typer.Option("--full-rescan", metavar="DURATION", help="walk the whole tree about this often (randomised), in case an event was missed")] = "1h",
          rescan_unwatched: Annotated[str, typer.Option("--rescan-unwatched", metavar="DURATION", help="rescan folders that could not be watched (out of inotify watches) this often")] = "1m",
          **flags):
    """Mirror changes as they happen (runs until stopped; see README "Watch"). Each run is an apply."""
    kw = {k: v for k, v in flags.items() if k not in JOB_FLAGS}
    kw["json_out"] = False
    from reconcile.jobs import Driver
    from reconcile.logs import LogSettings
    from reconcile.watch.command import watch_jobs
    from reconcile.watch.loop import WatchSettings

    settings = WatchSettings(quiet_for=parse_duration(quiet_for, "--quiet-for"),
                             max_wait=parse_duration(max_wait, "--max-wait"),
                             full_rescan=_every(full_rescan, "--full-rescan"),
                             unwatched_every=_every(rescan_unwatched, "--rescan-unwatched"))
    if settings.max_wait < settings.quiet_for:
        raise typer.BadParameter(f"--max-wait ({max_wait}) is shorter than --quiet-for ({quiet_for}): no run would ever "
                                 "wait for quiet; give a --max-wait at least as long")
    driver = Driver(flag_defaults(watch), lambda job, all_: _run("apply", job.source, job.dest, dict(job.kw),
                                                                  job.name if all_ else None),
                    guarded, typer.BadParameter)
    log = LogSettings(flags["log_file"], flags["log_format"])
    raise typer.Exit(watch_jobs(source, dest, flags["all_"], flags["config"], log, kw, driver, settings))


def _every(text: str, flag: str) -> float:
    """a period: 0 (say, meant as 'never') would walk the whole tree again and again"""
    seconds = parse_duration(text, flag)
    if seconds <= 0:
        raise typer.BadParameter(f"{flag} must be more than 0, e.g. {flag} 1h; it cannot be turned off")
    return seconds
