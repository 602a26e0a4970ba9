"""Remote back-ends, picked by the destination URL. paramiko and boto3 are
imported only when their remote is used."""

from __future__ import annotations

from urllib.parse import urlsplit

from reconcile.errors import ConfigError
from reconcile.remotes.base import Capabilities, Remote, RemoteOptions

__all__ = ["Capabilities", "Remote", "RemoteOptions", "open_remote", "dest_kind"]


def dest_kind(url: str) -> str:
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme in ("", "file"):
        return "local"
    if scheme in ("sftp", "s3"):
        return scheme
    raise ConfigError(
        f"unknown destination scheme '{scheme}://' in {url!r}: use a folder path, "
        "file:///path, sftp://[user@]host[:port]/path or s3://bucket[/prefix]"
    )


def open_remote(url: str, options: RemoteOptions) -> Remote:
    kind = dest_kind(url)
    if kind == "local":
        from reconcile.remotes.local import LocalRemote

        return LocalRemote.from_url(url, options)
    if kind == "sftp":
        from reconcile.remotes.sftp import SftpRemote

        return SftpRemote.from_url(url, options)
    from reconcile.remotes.s3 import S3Remote

    return S3Remote.from_url(url, options)
