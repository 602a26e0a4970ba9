"""The flags several commands share, spelled once, and what turns them into
the core's options."""

from __future__ import annotations

import inspect
import os
from typing import Annotated, List, Optional

import typer

from reconcile import units
from reconcile.cli.root import CONNECTION, CONTROLS, GUARDS, JOBS, S3, SFTP
from reconcile.errors import ConfigError
from reconcile.remotes.sftp import findlist
from reconcile.remotes.base import RemoteOptions, S3Options, SftpOptions

# one word instead of SOURCE DEST names a mapping of the config file
NameArg = typer.Argument(None, show_default=False, metavar="SOURCE|MAPPING",
                         help="local folder to mirror, or the name of a mapping in the config file")
OptDestArg = typer.Argument(None, show_default=False, metavar="DEST",
                            help="folder, file:///path, sftp://[user@]host[:port]/path or s3://bucket[/prefix]")


def parse_duration(text: str, flag: str) -> float:
    """units.parse_duration, its error naming the flag, shown as a bad flag."""
    try:
        return units.parse_duration(text)
    except ConfigError as exc:
        raise typer.BadParameter(f"{flag}: {exc}") from None


def parse_rate(text: str, flag: str = "--bwlimit") -> float:
    """units.parse_rate, its error naming the flag, shown as a bad flag."""
    try:
        return units.parse_rate(text)
    except ConfigError as exc:
        raise typer.BadParameter(f"{flag}: {exc}") from None


def choice(value: str, allowed: tuple[str, ...], flag: str = "") -> str:
    if value not in allowed:
        raise typer.BadParameter(f"{flag + ' ' if flag else ''}{value!r} is not one of {', '.join(allowed)}")
    return value


def links_choice(value: str) -> str:
    if value not in ("skip", "follow", "store"):
        raise typer.BadParameter(f"--links {value!r}: use skip, follow or store")
    return value


def remote_options(flags: dict) -> RemoteOptions:
    """the connection flags of a command (plan, apply, verify, restore) as the
    remotes take them, each kind's in its own class; one a command lacks keeps its default"""
    sftp = SftpOptions(key=flags["ssh_key"], known_hosts=flags["known_hosts"],
                       accept_new_host_key=flags.get("accept_new_host_key", False))
    s3 = S3Options(endpoint=flags["s3_endpoint"], profile=flags["profile"], storage_class=flags.get("s3_storage_class"),
                   sse=flags.get("s3_sse"), sse_kms_key_id=flags.get("s3_sse_kms_key_id"))
    remote = RemoteOptions(transfers=flags["transfers"], retry_for=parse_duration(flags["retry_for"], "--retry-for"),
                           sftp=sftp, s3=s3)
    # names stored as rclone does: restore maps them back
    remote.extra["name_encoding"] = bool(flags.get("name_encoding"))
    return remote


def check_transfers(transfers: int | None) -> None:
    if transfers is not None and transfers < 1:
        raise typer.BadParameter("--transfers must be 1 or more")


def run_options(flags: dict):
    """plan's and apply's flags (a mapping's values filled in) as one run's RunOptions"""
    from reconcile.engine import RunOptions
    from reconcile.excludes import all_patterns

    check_transfers(flags["transfers"])
    if flags["max_delete"] is not None and flags["max_delete"] < 0:
        raise typer.BadParameter("--max-delete must be 0 or more")
    if flags["backup_keep"] is not None and not flags["backup_keep"] > 0:  # nan too
        # 0 or less would put the cutoff at now or later: every earlier trash run pruned
        raise typer.BadParameter("--backup-keep must be more than 0 days, e.g. --backup-keep 30")
    remote = remote_options(flags)
    bwlimit = flags["bwlimit"]
    opts = RunOptions(delete=flags["delete"], exclude=all_patterns(flags["exclude"], flags["exclude_from"],
                                                                   flags["include"]),
                      max_delete=flags["max_delete"], allow_empty_source=flags["allow_empty_source"],
                      offline=flags.get("offline", False), state_dir=flags["state_dir"], remote=remote,
                      backup_dir=flags["backup_dir"], backup_keep_days=flags["backup_keep"],
                      bwlimit=parse_rate(bwlimit) if bwlimit else None, links=links_choice(flags["links"]),
                      checksum=flags["checksum"], allow_new_destination=flags["allow_new_destination"],
                      allow_reverse=flags["allow_reverse"])
    remote.extra["perms"] = flags["perms"]
    remote.sftp.find = choice(flags["ssh_find"], findlist.WAYS, "--ssh-find")
    return opts


def with_flags_of(shared, leave_out: tuple[str, ...] = (), defaults: dict | None = None):
    """a command's own parameters (its **flags left out), then shared's: typer
    reads the joined signature and passes every flag by name, so the shared
    ones arrive in **flags. leave_out: shared flags the command does not take;
    defaults: shared flags whose default differs for this command."""
    def attach(command):
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.kind != p.VAR_KEYWORD]
        theirs = [p.replace(default=(defaults or {}).get(p.name, p.default))
                  for p in inspect.signature(shared, eval_str=True).parameters.values() if p.name not in leave_out]
        command.__signature__ = inspect.Signature(own + theirs)
        return command

    return attach


def flag_defaults(command) -> dict:
    """the defaults of a typer command's flags, to tell given flags apart."""
    return {name: p.default for name, p in inspect.signature(command).parameters.items()}


def conflicting_flags(ctx) -> str | None:
    """why the flags given cannot go together, in one line; None when they can.
    RECONCILE_CONFIG comes in as --config too: only a --config typed on the
    command line is checked (cron runs SOURCE DEST with it set)."""
    params = ctx.params
    if params.get("quiet") and params.get("verbose"):
        return "-q (--quiet) and -v (--verbose) contradict each other: give one of them"
    config = params.get("config")
    source = ctx.get_parameter_source("config")  # click's ParameterSource (typer vendors click)
    if config is None or source is None or source.name != "COMMANDLINE":
        return None
    if params.get("source") is not None and params.get("dest") is not None:
        return (f"--config {config} reads mappings, but SOURCE and DEST were given too, which name no mapping: "
                "drop --config, or give a mapping name (or --all) instead of SOURCE DEST")
    if not os.path.exists(os.path.expanduser(config)):
        name = params.get("source")
        folder = (f"; if {name} is the folder to mirror, give the destination too (and no --config)"
                  if name is not None and os.path.isdir(os.path.expanduser(name)) else "")
        return (f"no config file at {config} (given with --config): check the path, or drop --config to read "
                f"the default one{folder}")
    return None


# the flags that pick and log runs rather than shape one
JOB_FLAGS = ("source", "dest", "all_", "config", "log_file", "log_format")

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
Quiet = Annotated[bool, typer.Option("-q", "--quiet", help="only warnings, errors and the summary line (not with -v)")]
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
ConfigOpt = Annotated[Optional[str], typer.Option("--config", metavar="FILE", envvar="RECONCILE_CONFIG", rich_help_panel=JOBS, help="config file of mappings (default: the platform's config folder); not with SOURCE DEST")]
LogFile = Annotated[Optional[str], typer.Option("--log-file", metavar="FILE", rich_help_panel=JOBS, help="append log lines here (rotated at 10 MB, 5 kept)")]
LogFormat = Annotated[str, typer.Option("--log-format", metavar="text|json", rich_help_panel=JOBS, callback=lambda v: choice(v, ("text", "json")), help="json: one object per line")]
DryRun = Annotated[bool, typer.Option("-n", "--dry-run", help="show what would be done and change nothing (the same as plan)")]
