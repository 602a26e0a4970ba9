"""reconcile verify: the read-only audit (reconcile/verify.py), for a pair,
a mapping or --all."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from reconcile.cli.flags import (JOB_FLAGS, AllOpt, ConfigOpt, Exclude, ExcludeFrom, Include, JsonOut, KnownHosts,
                                 NameArg, NameEncoding, OptDestArg, Profile, RetryFor, S3Endpoint, SshKey,
                                 StateDirOpt, Transfers, flag_defaults, links_choice, remote_options)
from reconcile.cli.guard import guarded
from reconcile.cli.root import command


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
           links: Annotated[str, typer.Option("--links", callback=links_choice, metavar="skip|follow|store",
                                              help="symlinks as the mirror treats them: skip, follow or store")] = "skip",
           name_encoding: NameEncoding = False,
           all_: AllOpt = False, config: ConfigOpt = None):
    """Read-only audit that the remote matches SOURCE: exit 0 when equal, 1 with the differences."""
    from reconcile.jobs import Driver, verify_jobs

    kw = {k: v for k, v in locals().items() if k not in JOB_FLAGS}
    driver = Driver(flag_defaults(verify), _verify_one, guarded, typer.BadParameter)
    raise typer.Exit(guarded(lambda: verify_jobs(source, dest, all_, config, kw, driver), False))


def _verify_one(job, all_: bool) -> int:
    from reconcile.verify import run

    options = remote_options(job.kw)
    return run(job.source, job.dest, options, {**job.kw, "mapping": job.name})
