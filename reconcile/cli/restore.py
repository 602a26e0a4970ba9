"""reconcile restore: the flags and the command; what it shows is in
reconcile/restore_output.py, the work in reconcile/restore.py."""

from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from reconcile.cli.flags import (AcceptNew, JsonOut, KnownHosts, NameEncoding, Profile, Quiet, RetryFor,
                                 S3Endpoint, SshKey, Transfers, Verbose, check_transfers, remote_options)
from reconcile.cli.guard import guarded
from reconcile.cli.root import command
from reconcile.trash import DEFAULT_TRASH


# the flags only restore has; the shared ones are in flags.py
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
        remote_url: str = typer.Argument(..., metavar="REMOTE_URL", help="folder, sftp://... or s3://... to restore from"),
        local_dir: Optional[str] = typer.Argument(None, metavar="[LOCAL_DIR]", help="folder to restore into"),
        path: Paths = None, overwrite: Overwrite = False, dry_run: RestoreDryRun = False, json_out: JsonOut = False,
        from_trash: FromTrash = None, list_trash: ListTrash = False, backup_dir: TrashDir = DEFAULT_TRASH,
        state_dir: SnapState = None, quiet: Quiet = False, verbose: Verbose = False,
        transfers: Transfers = None, ssh_key: SshKey = None, known_hosts: KnownHosts = None,
        accept_new_host_key: AcceptNew = False, retry_for: RetryFor = "5m", s3_endpoint: S3Endpoint = None,
        profile: Profile = None, name_encoding: NameEncoding = False):
    """Fetch the remote copy (or one run of its trash) back into LOCAL_DIR, verified."""
    from reconcile.restore_model import RestoreOptions
    from reconcile.restore_output import run_restore

    check_transfers(transfers)
    remote = remote_options(locals())  # the connection flags among this command's
    if state_dir is None:  # the pair's own state, found the way apply finds it
        from reconcile.pairs import pair_state_for_dest

        state_dir = pair_state_for_dest(remote_url, local_dir)
    opts = RestoreOptions(local_dir or "", list(path or []), overwrite, dry_run, from_trash, backup_dir,
                          state_dir, remote)
    raise typer.Exit(guarded(
        lambda: run_restore(remote_url, local_dir, opts, json_out, list_trash, quiet, verbose), verbose))
