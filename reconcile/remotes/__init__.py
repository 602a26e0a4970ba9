"""Remote back-ends, picked by the destination URL. paramiko and boto3 are
imported only when their remote is used."""

from __future__ import annotations

import sys
from urllib.parse import urlsplit

from reconcile import portable, winpath
from reconcile.errors import ConfigError
from reconcile.remotes.base import Capabilities, Remote, RemoteOptions

__all__ = ["Capabilities", "Remote", "RemoteOptions", "open_remote", "remote_class", "dest_kind", "local_path",
           "connect_early", "forget_early"]


# a relative destination starting with one of these is a URL missing its colon
_SCHEME_WORDS = {"sftp": "sftp", "ssh": "sftp", "scp": "sftp", "s3": "s3", "file": "file"}


def _missing_colon(url: str) -> None:
    """sftp//host/path would become the folder ./sftp/host/path: refuse it."""
    first, slash, rest = url.replace("\\", "/").partition("/")
    scheme = _SCHEME_WORDS.get(first.lower())
    if scheme is None or not slash:
        return
    rest = rest.lstrip("/")
    likely = f"file:///{rest}" if scheme == "file" else f"{scheme}://{rest}"
    raise ConfigError(f"destination {url!r} looks like a URL without its colon: did you mean {likely}? "
                      f"(a local folder named {first} is written ./{url})")


def dest_kind(url: str, windows: bool = portable.WINDOWS) -> str:
    """local, sftp or s3; on Windows C:\\backup and \\\\nas\\share\\backup are folders"""
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if not scheme:
        _missing_colon(url)
    if not scheme and ":" in url.split("/", 1)[0] and not (windows and winpath.is_drive_path(url)):
        # s3:/bucket, sftp:nas/x or rsync's host:path would silently become a local folder
        raise ConfigError(
            f"destination {url!r} is neither a folder nor a URL: write sftp://[user@]host[:port]/path "
            f"or s3://bucket[/prefix]; a local folder whose name has a colon is written ./{url}")
    if scheme in ("", "file"):
        return "local"
    if scheme in ("sftp", "s3"):
        return scheme
    raise ConfigError(
        f"unknown destination scheme '{scheme}://' in {url!r}: use a folder path, "
        "file:///path, sftp://[user@]host[:port]/path or s3://bucket[/prefix]"
    )


def local_path(url: str, windows: bool = portable.WINDOWS) -> str:
    """the folder a local destination names: a path, or a file:// URL decoded
    (file:///C:/backup and file://nas/share/backup on Windows)."""
    if not url.lower().startswith("file://"):
        return url
    path = winpath.file_url_path(url, windows)
    if path is None:
        raise ConfigError(f"file:// URL {url!r} names a host: use file:///absolute/path")
    return path


def remote_class(url: str) -> type[Remote]:
    """the class of the remote url names (imported here, on first use)."""
    kind = dest_kind(url)
    if kind == "local":
        from reconcile.remotes.local import LocalRemote

        return LocalRemote
    if kind == "sftp":
        from reconcile.remotes.sftp import SftpRemote

        return SftpRemote
    from reconcile.remotes.s3 import S3Remote

    return S3Remote


def open_remote(url: str, options: RemoteOptions) -> Remote:
    return remote_class(url).from_url(url, options)


def connect_early(url: str, options: RemoteOptions) -> None:
    """start connecting to url's server while the run starts up, where that
    is worth it (SFTP: remotes/sftp/headstart.py); the remote takes the
    connection when it first needs one. Never raises: a bad URL (or a broken
    paramiko) is reported where the run opens the remote, as before."""
    try:
        if dest_kind(url) == "sftp":
            from reconcile.remotes.sftp import headstart

            headstart.start(url, options)
    except Exception:  # noqa: BLE001 (only a head start: the run's own path says what is wrong)
        return


def forget_early() -> None:
    """a run's end: a connection connect_early started and no remote took is
    closed (the next run of `--all` may fork, which it must not meet). Where
    none was ever started, nothing more is imported (a run that dropped its
    privileges may not import any more modules)."""
    headstart = sys.modules.get("reconcile.remotes.sftp.headstart")
    if headstart is not None:
        headstart.discard(wait=False)
