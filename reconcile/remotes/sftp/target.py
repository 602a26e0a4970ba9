"""Where an SFTP remote connects: the URL read, and the ssh config applied
(Host aliases, HostName, Port, User, identity files, known_hosts files,
ProxyCommand), with host names checked before any config is read."""

from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from reconcile.errors import ConfigError
from reconcile.remotes.base import RemoteOptions

if TYPE_CHECKING:
    from reconcile.remotes.sftp.loader import paramiko


@dataclass
class _Target:
    alias: str  # as written in the URL
    host: str  # after the ssh config
    port: int
    user: str
    identity_files: list[str] = field(default_factory=list)
    known_hosts_files: list[str] = field(default_factory=list)
    proxy_command: str | None = None  # the ssh config's ProxyCommand, tokens expanded

    @property
    def key_name(self) -> str:
        """the host's name in known_hosts: OpenSSH writes [host]:port off port 22."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def _ssh_config_path(options: RemoteOptions) -> str:
    return (options.extra.get("ssh_config") or os.environ.get("RECONCILE_SSH_CONFIG")
            or os.path.expanduser("~/.ssh/config"))


# what a host name (or an ssh config alias) may hold; `Match exec` runs %h
# through a shell, so metacharacters are refused before any config is read
# (OpenSSH 9.6 does the same since CVE-2023-51385)
_HOST_NAME = re.compile(r"[A-Za-z0-9._:%\[\]-]+")


def check_host_name(host: str) -> None:
    if not _HOST_NAME.fullmatch(host) or host.startswith("-"):
        shown = host.encode("ascii", "backslashreplace").decode()
        raise ConfigError(f"host name {shown!r} holds characters a host name cannot have (only letters, digits, "
                          "'.', '-', '_' and ':'); check the URL")


def _lookup_ssh_config(alias: str, options: RemoteOptions) -> dict:
    path = _ssh_config_path(options)
    if not os.path.exists(path):
        return {}
    from reconcile.remotes.sftp.loader import paramiko  # not before: headstart.py connects first

    try:
        return dict(_config_lookup(paramiko.SSHConfig.from_path(path), alias))
    except Exception as exc:
        raise ConfigError(f"cannot read ssh config {path}: {exc or exc.__class__.__name__}") from None


def _config_lookup(config: paramiko.SSHConfig, alias: str) -> paramiko.SSHConfigDict:
    try:
        return config.lookup(alias)
    except ImportError:  # a `Match exec` line: now paramiko gets invoke
        import invoke

        from reconcile.remotes.sftp.loader import paramiko
        paramiko.config.invoke = invoke
        return config.lookup(alias)


def _parse_url(url: str, options: RemoteOptions) -> tuple[_Target, str, str]:
    parts = urlsplit(url)
    if parts.scheme.lower() != "sftp" or not parts.hostname:
        raise ConfigError(f"not an sftp URL: {url!r}; use sftp://[user@]host[:port]/path")
    if parts.password is not None:
        raise ConfigError("do not put a password in the URL: set RECONCILE_SFTP_PASSWORD instead")
    try:
        url_port = parts.port
    except ValueError:
        raise ConfigError(f"bad port in {url!r}: a port is a number from 1 to 65535, "
                          "like sftp://me@nas:2222/backup") from None
    path = unquote(parts.path, errors="surrogateescape")
    if not path:
        raise ConfigError(f"{url!r} names no folder: use sftp://host/absolute/path or sftp://host/~/path")
    if path == "/~" or path.startswith("/~/"):
        root = path[3:].strip("/") or "."
    else:
        root = path.rstrip("/") or "/"
    alias = parts.hostname
    check_host_name(alias)
    cfg = _lookup_ssh_config(alias, options)
    user = unquote(parts.username) if parts.username else cfg.get("user") or getpass.getuser()
    try:
        port = url_port or int(cfg.get("port", 22))
    except ValueError:
        raise ConfigError(f"bad Port for {alias} in the ssh config") from None
    idents = [os.path.expanduser(p) for p in cfg.get("identityfile", [])]
    if options.sftp.known_hosts:
        known = [os.path.expanduser(options.sftp.known_hosts)]
    else:
        user_files = cfg.get("userknownhostsfile", "~/.ssh/known_hosts").split()
        known = [os.path.expanduser(p) for p in user_files] + ["/etc/ssh/ssh_known_hosts"]
    proxy = cfg.get("proxycommand")
    if cfg.get("proxyjump") and not proxy:
        # going straight to the host instead would be a silent surprise
        raise ConfigError(f"the ssh config gives {alias} a ProxyJump, which reconcile does not follow: "
                          f"write it as ProxyCommand ssh -W %h:%p {cfg['proxyjump']} for that host")
    target = _Target(alias, cfg.get("hostname", alias), port, user, idents, known,
                     None if not proxy or proxy.lower() == "none" else proxy)
    shown = f"sftp://{user}@{alias}" + (f":{url_port}" if url_port else "") + parts.path
    return target, root, shown
