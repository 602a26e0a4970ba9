"""Host keys (known_hosts checked, a new key recorded only when asked) and
authentication (keys of the ssh config, --ssh-key, the agent, a password
from the environment or a prompt) of an SftpRemote's connections."""

from __future__ import annotations

import getpass
import hashlib
import os
import sys
from typing import Iterator

from reconcile import portable
from reconcile.errors import AuthError, ConfigError, Transient
from reconcile.remotes.sftp.loader import paramiko
from reconcile.remotes.sftp.eager import EarlyChannel, KeyCannotSign, auth_publickey


def _fingerprint(key: paramiko.PKey) -> str:
    import base64

    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _unreadable_key(path: str, exc: Exception) -> str:
    """why --ssh-key FILE is no private key, and what to give instead"""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as err:
        return f"cannot read ssh key file {path}: {err.strerror or err}; check the path and its permissions"
    if path.endswith(".pub") or head.startswith((b"ssh-", b"ecdsa-", b"sk-")):
        return (f"ssh key file {path} is a public key: give the private key with --ssh-key "
                "(the file of the same name without .pub)")
    return (f"cannot read ssh key file {path}: it is not a private key paramiko can load "
            f"({exc.__class__.__name__}); give an OpenSSH or PEM private key with --ssh-key")


def load_known_hosts(target) -> paramiko.HostKeys:
    """the known_hosts files of target (a _Target), those that can be read"""
    keys = paramiko.HostKeys()
    for path in target.known_hosts_files:
        if os.path.isfile(path):
            try:
                keys.load(path)
            except (OSError, paramiko.SSHException):
                pass
    return keys


def known_key_types(target) -> set[str]:
    """the host key types known_hosts holds for target: asked for first"""
    entry = load_known_hosts(target).lookup(target.key_name)
    types = set(entry.keys()) if entry else set()
    if "ssh-rsa" in types:
        types |= {"rsa-sha2-512", "rsa-sha2-256"}
    return types


class Auth:
    """Session's host keys and authentication: uses self.target, self.options."""

    def _load_known_hosts(self) -> paramiko.HostKeys:
        return load_known_hosts(self.target)

    def _known_types(self) -> set[str]:
        return known_key_types(self.target)

    def _check_host_key(self, key: paramiko.PKey) -> None:
        with self._hostkey_lock:
            if self._trusted_key is None:
                self._verify_host_key(key)
                self._trusted_key = key.asbytes()
            elif key.asbytes() != self._trusted_key:
                raise ConfigError(f"WARNING: the host key of {self.target.key_name} changed during this run "
                                  f"(now {key.get_name()} {_fingerprint(key)}): refusing to continue")

    def _verify_host_key(self, key: paramiko.PKey) -> None:
        name = self.target.key_name
        entry = self._load_known_hosts().lookup(name)
        fp = _fingerprint(key)
        if not entry:
            if not self.options.sftp.accept_new_host_key:
                raise ConfigError(
                    f"unknown host {name}: its {key.get_name()} key fingerprint is {fp}. "
                    "If that is the server's key, run again with --accept-new-host-key to trust and record it")
            self._record_host_key(name, key)
            return
        known = entry.get(key.get_name())
        if known is not None and known.asbytes() == key.asbytes():
            return
        files = ", ".join(self.target.known_hosts_files[:1])
        raise ConfigError(
            f"WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED for {name}! It now offers {key.get_name()} {fp}, "
            f"which does not match {files}. Someone could be intercepting the connection. If the server's key "
            f"really changed, remove the old one with: ssh-keygen -R '{name}' -f {files}")

    def _record_host_key(self, name: str, key: paramiko.PKey) -> None:
        path = self.target.known_hosts_files[0]
        line = f"{name} {key.get_name()} {key.get_base64()}\n"
        try:
            os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | portable.BINARY, 0o600)
            with os.fdopen(fd, "a") as f:
                if f.tell() > 0 and not _ends_with_newline(path):
                    line = "\n" + line
                f.write(line)
        except OSError as exc:
            raise ConfigError(f"cannot record the host key in {path}: {exc.strerror}") from None

    def _authenticate(self, transport: paramiko.Transport) -> EarlyChannel | None:
        """signed in on transport; the channel opened behind the request that did it, if any."""
        user = self.target.user
        tried: list[str] = []
        try:
            for label, key in self._keys():
                try:
                    # the first key's attempt carries the session's channel open behind it
                    return auth_publickey(transport, user, key, early=not tried)
                except paramiko.BadAuthenticationType:
                    break  # the server takes no keys at all
                except paramiko.AuthenticationException:
                    tried.append(label)
                except KeyCannotSign as exc:
                    raise AuthError(f"ssh {label} could not sign the sign-in to {self._where()} ({exc}): "
                                    "unlock or confirm it in ssh-agent, plug its token in, or give another "
                                    "key with --ssh-key") from None
            if self._try_password(transport, tried):
                return None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if not transport.is_active():
                tried.append(f"then the server closed the connection ({exc.__class__.__name__})")
            else:
                raise Transient(f"ssh authentication with {self._where()} failed: {exc}") from None
        what = ", ".join(tried) or "nothing: no key, agent or password available"
        raise AuthError(
            f"authentication failed for {user}@{self._where()} (tried {what}); give a key with --ssh-key, "
            "load one into ssh-agent, or set RECONCILE_SFTP_PASSWORD")

    def _keys(self) -> Iterator[tuple[str, paramiko.PKey]]:
        agent = None
        if os.environ.get("SSH_AUTH_SOCK"):
            try:
                agent = paramiko.Agent()
                for key in agent.get_keys():
                    yield f"agent key {key.get_name()}", key
            except paramiko.SSHException:
                pass
            finally:
                if agent is not None:
                    agent.close()
        explicit = [os.path.expanduser(self.options.sftp.key)] if self.options.sftp.key else []
        files = explicit + self.target.identity_files
        if not files:
            files = [os.path.expanduser(f"~/.ssh/{n}") for n in ("id_ed25519", "id_ecdsa", "id_rsa")]
        for path in dict.fromkeys(files):
            key = self._load_key(path, explicit=path in explicit)
            if key is not None:
                yield f"key {path}", key

    def _load_key(self, path: str, explicit: bool) -> paramiko.PKey | None:
        if not os.path.exists(path):
            if explicit:
                raise ConfigError(f"ssh key file {path} does not exist")
            return None
        try:
            return paramiko.PKey.from_path(path)
        except TypeError:
            pass  # encrypted: needs a passphrase
        except (ValueError, OSError, paramiko.SSHException) as exc:
            if explicit:
                raise ConfigError(_unreadable_key(path, exc)) from None
            return None
        passphrase = self._secret("RECONCILE_SSH_KEY_PASSPHRASE", f"passphrase for key {path}: ")
        if passphrase is None:
            if explicit:
                raise AuthError(f"ssh key {path} is encrypted: set RECONCILE_SSH_KEY_PASSPHRASE "
                                "or run from a terminal to be asked")
            return None
        try:
            return paramiko.PKey.from_path(path, passphrase.encode())
        except (ValueError, TypeError, paramiko.SSHException):
            raise AuthError(f"cannot decrypt ssh key {path}: wrong passphrase") from None

    def _try_password(self, transport: paramiko.Transport, tried: list[str]) -> bool:
        user = self.target.user
        password = self._secret("RECONCILE_SFTP_PASSWORD", f"password for {user}@{self.target.host}: ")
        if password is None:
            return False
        try:
            transport.auth_password(user, password)
            return True
        except paramiko.BadAuthenticationType as exc:
            if "keyboard-interactive" not in exc.allowed_types:
                tried.append("password (not accepted by this server)")
                return False
        except paramiko.AuthenticationException:
            tried.append("password")
            return False
        try:
            transport.auth_interactive(user, lambda _title, _instr, prompts: [password] * len(prompts))
            return True
        except paramiko.AuthenticationException:
            tried.append("password (keyboard-interactive)")
            return False

    def _secret(self, env: str, prompt: str) -> str | None:
        """from the environment, else asked once on a terminal; kept in memory only."""
        if os.environ.get(env):
            return os.environ[env]
        with self._secret_lock:
            if prompt not in self._secrets:
                asked = None
                if sys.stdin is not None and sys.stdin.isatty():
                    try:
                        asked = getpass.getpass(prompt)
                    except (EOFError, OSError):
                        asked = None
                self._secrets[prompt] = asked
            return self._secrets[prompt]


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
