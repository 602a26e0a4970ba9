"""`reconcile apply|plan|verify SOURCE sftp://...` (and restore sftp://... DIR): the connection to the server
started from a first look at the arguments, before the command line itself
is loaded (typer and rich, then the engine: about 0.15 s of CPU) (issue 21).

Only a head start: nothing is checked or decided here. The run checks the
host key and signs in as it always does, and uses this connection only where
it goes exactly where the run would have connected itself; otherwise it is
closed unused (remotes/sftp/headstart.py). Never for --offline, --all, a
mapping name or --help; mirror.py starts one for a mapping's run."""

from __future__ import annotations

COMMANDS = ("apply", "plan", "verify", "restore")  # those that connect (but plan --offline)
NOT_NOW = {"--offline", "--help", "-h", "--all", "--"}  # never connects, or the destination is not in the arguments


def start_from_arguments(args: list[str]) -> None:
    if not args or args[0] not in COMMANDS:
        return
    if any(a.split("=", 1)[0] in NOT_NOW for a in args[1:]):
        return
    urls = [a for a in args[1:] if a[:7].lower() == "sftp://"]
    if len(urls) != 1:
        return
    from reconcile.remotes import RemoteOptions, connect_early
    from reconcile.remotes.base import SftpOptions

    options = RemoteOptions(sftp=SftpOptions(known_hosts=_value(args, "--known-hosts")))
    options.expected_entries = _entries_last_seen(args, urls[0])
    connect_early(urls[0], options)


def _entries_last_seen(args: list[str], url: str) -> int:
    """about how many entries the pair's last run saw (headstart.start skips
    a tree large enough to be listed by a forked child); the source is the
    argument before the URL, and 0 where it cannot be told."""
    at = args.index(url)
    source = args[at - 1] if at >= 2 and not args[at - 1].startswith("-") else None
    if source is None:
        return 0
    from reconcile.statedir import last_snapshot_entries

    return last_snapshot_entries(source, url, _value(args, "--state-dir"))


def _value(args: list[str], flag: str) -> str | None:
    """the last value given to flag (as `flag VALUE` or `flag=VALUE`)"""
    found = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith(flag + "="):
            found = arg[len(flag) + 1:]
    return found
