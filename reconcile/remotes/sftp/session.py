"""Where an SFTP remote connects and how: the URL and the ssh config
(Host aliases, identity files, ProxyCommand), connections and the SFTP
sessions (channels) threads open on them, host keys, authentication, what
they cost (NetStats), and paramiko's errors mapped to ours.

One connection (one ssh handshake: seven round trips or more) carries a
session per thread; one more session costs three round trips. Each session is
its own SFTPClient (sharing one client across threads can deadlock, paramiko
issue 1836). A server that refuses a second session gets a connection per
session, as before."""

from __future__ import annotations

import errno
import getpass
import hashlib
import os
import re
import select
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator
from urllib.parse import unquote, urlsplit

from reconcile import portable
from reconcile.errors import AuthError, ConfigError, NotFound, Permanent, ReconcileError
from reconcile.errors import Refused, Transient, Unreachable, UnresolvedHost
from reconcile.remotes.base import NetStats, RemoteOptions
from reconcile.remotes.sftp.loader import paramiko
from reconcile.remotes.sftp.wire import _chunk_limits

CONNECT_TIMEOUT = 20.0
IO_TIMEOUT = 60.0  # a silent server for this long counts as a lost connection
CLOSE_WAIT = 5.0  # for a closed connection's thread to end
WINDOW = 32 << 20  # ssh channel window: large, so pipelined writes never stall on it
# from this round trip a first sync's small files wait on the link, not the
# CPU: no upload child (its handshake would cost more than its core saves)
LINK_BOUND_RTT = 0.02
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


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


class _Conn:
    """an SFTP session: its own channel, on a connection (transport) it owns
    or shares with other sessions."""

    def __init__(self, transport: paramiko.Transport, sftp: paramiko.SFTPClient, owns_transport: bool = True) -> None:
        self.transport = transport
        self.sftp = sftp
        self.owns_transport = owns_transport
        self.clean = False  # a listing over it ended with nothing left unread
        self.finish: Callable[[], bool] | None = None  # reads a listing's last replies: clean after?
        self.no_fsync = False
        self.no_posix_rename = False
        asked = time.monotonic()
        self.write_chunk, self.read_chunk, self.max_handles = _chunk_limits(sftp)
        self.rtt = time.monotonic() - asked  # one request answered: the link's round trip, about

    def close(self) -> None:
        try:
            self.sftp.close()
        except Exception:
            pass
        if self.owns_transport:
            _close_transport(self.transport)


def _close_transport(transport: paramiko.Transport) -> None:
    transport.close()
    if transport is not threading.current_thread():
        # paramiko does not wait for its thread: a fork (forked.py) must see it gone
        transport.join(CLOSE_WAIT)


class _Wire:
    """a connection's socket, counting into stats the round trips waited on."""

    def __init__(self, sock: socket.socket, stats: NetStats) -> None:
        self._sock = sock
        self._stats = stats
        self._asked = False  # something was sent since the last wait

    def send(self, data) -> int:
        self._asked = True
        return self._sock.send(data)

    def sendall(self, data) -> None:
        self._asked = True
        self._sock.sendall(data)

    def recv(self, n: int) -> bytes:
        if self._asked and not select.select([self._sock], [], [], 0)[0]:
            self._asked = False
            with self._stats.lock:  # every connection's thread counts into one total
                self._stats.round_trips += 1
        return self._sock.recv(n)

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


class _NoSession(Exception):
    """the server would not open one more channel on a connection."""


def _fingerprint(key: paramiko.PKey) -> str:
    import base64

    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


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
    try:
        return dict(_config_lookup(paramiko.SSHConfig.from_path(path), alias))
    except Exception as exc:
        raise ConfigError(f"cannot read ssh config {path}: {exc or exc.__class__.__name__}") from None


def _config_lookup(config: paramiko.SSHConfig, alias: str) -> paramiko.SSHConfigDict:
    try:
        return config.lookup(alias)
    except ImportError:  # a `Match exec` line: now paramiko gets invoke
        import invoke
        paramiko.config.invoke = invoke
        return config.lookup(alias)


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
    if options.known_hosts:
        known = [os.path.expanduser(options.known_hosts)]
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


class Session:
    """connections, host keys and authentication of an SftpRemote."""

    def _fresh_connection_state(self) -> None:
        """no connection, pool or lock held: at start, and in a forked child,
        where the parent's are not ours. Those stay referenced: freed, a
        paramiko Channel closes itself, taking locks a parent thread may have
        held at the fork."""
        self._inherited = getattr(self, "_conns", None), getattr(self, "_local", None)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: set[_Conn] = set()
        self._hostkey_lock = threading.Lock()
        self._secret_lock = threading.Lock()
        self._root_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._inherited_home = getattr(self, "_home", None)
        self._home: paramiko.Transport | None = None  # the connection new sessions are opened on
        self._connecting = threading.Lock()
        self._one_session = False  # the server allows one session per connection
        # a listing's session and thread: the session serves the next thread once its last replies are read
        self._handoff: tuple[threading.Thread, _Conn] | None = None
        self.net = NetStats()  # a forked child counts its own, from 0
        self._rtt: float | None = getattr(self, "_rtt", None)  # the shortest request round trip seen (s)

    def forget_connections(self) -> None:
        """in a forked child (upload_child): the parent's connections are not
        ours to use or close; the next call connects afresh."""
        self._fresh_connection_state()

    # --- connections -------------------------------------------------------

    def _conn(self, own: bool = False) -> _Conn:
        """this thread's SFTP session: on the shared connection, or with own,
        on a connection of its own (a range writer: its own packet thread)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or not conn.transport.is_active():
            if conn is not None:
                self._drop()
            conn = self._connect() if own else self._session()
            self._local.conn = conn
            with self._lock:
                self._conns.add(conn)
        return conn

    def _session(self) -> _Conn:
        """a new SFTP session: an idle one, or a channel on the connection
        already open, or else (the first, or a server that allows one
        session per connection) a connection of its own."""
        with self._connecting:
            conn = self._settled_handoff()
            if conn is not None:
                return conn
            home = self._home
            if home is not None and not home.is_active():
                _close_transport(home)
                home = self._home = None
            if home is None or self._one_session:
                conn = self._connect()
                if not self._one_session:
                    conn.owns_transport = False  # closed by close_sessions(), with every session on it
                    self._home = conn.transport
                return conn
        # outside the lock: threads open their sessions together (three round trips, not three each in turn)
        try:
            return self._open_session(home, owns_transport=False)
        except (_NoSession, Transient):
            if not home.is_active():
                raise
        with self._connecting:
            self._one_session = True  # MaxSessions 1, or a server that refuses a second
            return self._connect()

    def _hand_on(self, lister: threading.Thread, conn: _Conn) -> None:
        """a listing that ended: its session serves the next thread that needs
        one, once the listing thread has read the last replies (not waited
        for here: a run with nothing to do never waits for them)."""
        with self._connecting:
            self._handoff = (lister, conn)

    def _take_idle_session(self) -> _Conn | None:
        """this thread's session, taken from it for another thread (the
        listing's, which hands it on when done): one session fewer to open
        where this thread already asked something (a first run's probe)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or not conn.transport.is_active() or conn.owns_transport:
            return None
        self._local.conn = None
        with self._lock:
            self._conns.discard(conn)
        return conn

    def _settled_handoff(self) -> _Conn | None:
        """(with _connecting held) the listing's session if it can serve, else None (closed)."""
        if self._handoff is None:
            return None
        lister, conn = self._handoff
        self._handoff = None
        lister.join(IO_TIMEOUT)
        if not lister.is_alive() and conn.clean and conn.transport.is_active():
            return conn
        conn.close()  # wakes a listing thread still waiting on the server
        lister.join(CLOSE_WAIT)
        return None

    def close_sessions(self) -> None:
        """close every session, then the shared connection."""
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            conn.close()
        with self._connecting:
            home, self._home = self._home, None
            handoff, self._handoff = self._handoff, None
        if handoff is not None:
            lister, conn = handoff
            conn.close()  # its last replies are not needed
            lister.join(CLOSE_WAIT)
        if home is not None:
            _close_transport(home)
        self._local = threading.local()

    def net_stats(self) -> NetStats:
        """connections, sessions and round trips so far (a forked child's once it ends)."""
        return self.net

    def _sftp(self) -> paramiko.SFTPClient:
        return self._conn().sftp

    def _drop(self) -> None:
        """forget this thread's connection, so the next call reconnects."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _discard(self, conn: _Conn) -> None:
        """close conn, whichever thread it belongs to: that thread reconnects
        on its next call (_conn finds the transport inactive)."""
        if getattr(self._local, "conn", None) is conn:
            self._drop()
            return
        with self._lock:
            self._conns.discard(conn)
        conn.close()

    def _connected(self) -> bool:
        conn = getattr(self._local, "conn", None)
        return conn is not None and conn.transport.is_active()

    def _where(self) -> str:
        return f"{self.target.host}:{self.target.port}"

    def _open_socket(self) -> socket.socket:
        if self.target.proxy_command:
            return self._open_proxy(self.target.proxy_command)
        try:
            sock = socket.create_connection((self.target.host, self.target.port), timeout=CONNECT_TIMEOUT)
        except socket.gaierror as exc:
            raise UnresolvedHost(f"cannot resolve host {self.target.host}: {exc.strerror}", self.target.host) from None
        except (socket.timeout, TimeoutError):
            raise Unreachable(f"cannot connect to {self._where()}: timed out") from None
        except ConnectionRefusedError as exc:
            raise Refused(f"cannot connect to {self._where()}: {exc.strerror}: is the SSH server running "
                              f"there, and is {self.target.port} its port?") from None
        except OSError as exc:
            raise Unreachable(f"cannot connect to {self._where()}: {exc.strerror or exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _open_proxy(self, command: str):
        """the ssh config's ProxyCommand, run without a shell (paramiko splits it
        as OpenSSH would); its stdin/stdout carry the session"""
        try:
            return paramiko.ProxyCommand(command)
        except (paramiko.ssh_exception.ProxyCommandFailure, OSError, ValueError) as exc:
            raise Unreachable(f"cannot connect to {self._where()}: the ssh config's ProxyCommand "
                              f"{command!r} failed ({getattr(exc, 'error', None) or exc})") from None

    def _connect(self) -> _Conn:
        sock = self._open_socket()
        if isinstance(sock, socket.socket):
            sock = _Wire(sock, self.net)
        with self.net.lock:
            self.net.connections += 1
        transport = paramiko.Transport(sock, default_window_size=WINDOW)
        try:
            self._prefer_algorithms(transport)
            try:
                transport.start_client(timeout=CONNECT_TIMEOUT)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise Unreachable(f"no ssh session with {self._where()}: {exc}") from None
            self._check_host_key(transport.get_remote_server_key())
            self._authenticate(transport)
            try:
                return self._open_session(transport, owns_transport=True)
            except _NoSession as exc:
                raise Transient(f"no sftp subsystem on {self._where()}: {exc}") from None
        except BaseException:
            transport.close()
            raise

    def _open_session(self, transport: paramiko.Transport, owns_transport: bool) -> _Conn:
        """a channel running the sftp subsystem: three round trips (open,
        subsystem, SFTP's INIT; sshd opens the channel's window only once the
        subsystem runs, so they cannot go out together)."""
        with self.net.lock:
            self.net.sessions += 1
        try:
            sftp = paramiko.SFTPClient.from_transport(transport, window_size=WINDOW)
        except paramiko.ChannelException as exc:
            raise _NoSession(str(exc)) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise Transient(f"no sftp subsystem on {self._where()}: {exc}") from None
        if sftp is None:
            raise Permanent(f"{self._where()} refused the sftp subsystem")
        sftp.get_channel().settimeout(IO_TIMEOUT)
        conn = _Conn(transport, sftp, owns_transport)
        with self.net.lock:
            self._rtt = conn.rtt if self._rtt is None else min(self._rtt, conn.rtt)
        return conn

    def link_bound(self) -> bool:
        """(Remote.link_bound) the round trip measured on opening a session
        is long enough that many small uploads wait on the link, not on this
        machine's CPU: a second process would only add an ssh handshake."""
        return self._rtt is not None and self._rtt >= LINK_BOUND_RTT

    def _prefer_algorithms(self, transport: paramiko.Transport) -> None:
        opts = transport.get_security_options()
        fast = [c for c in FAST_CIPHERS if c in opts.ciphers]
        opts.ciphers = fast + [c for c in opts.ciphers if c not in fast]
        # ask for the host key type we already know, as OpenSSH does
        known = self._known_types()
        if known:
            first = [k for k in opts.key_types if k in known]
            opts.key_types = first + [k for k in opts.key_types if k not in first]

    # --- host keys ---------------------------------------------------------

    def _load_known_hosts(self) -> paramiko.HostKeys:
        keys = paramiko.HostKeys()
        for path in self.target.known_hosts_files:
            if os.path.isfile(path):
                try:
                    keys.load(path)
                except (OSError, paramiko.SSHException):
                    pass
        return keys

    def _known_types(self) -> set[str]:
        entry = self._load_known_hosts().lookup(self.target.key_name)
        types = set(entry.keys()) if entry else set()
        if "ssh-rsa" in types:
            types |= {"rsa-sha2-512", "rsa-sha2-256"}
        return types

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
            if not self.options.accept_new_host_key:
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

    # --- authentication ----------------------------------------------------

    def _authenticate(self, transport: paramiko.Transport) -> None:
        user = self.target.user
        tried: list[str] = []
        try:
            for label, key in self._keys():
                try:
                    transport.auth_publickey(user, key)
                    return
                except paramiko.BadAuthenticationType:
                    break  # the server takes no keys at all
                except paramiko.AuthenticationException:
                    tried.append(label)
            if self._try_password(transport, tried):
                return
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
        explicit = [os.path.expanduser(self.options.ssh_key)] if self.options.ssh_key else []
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

    # --- errors ------------------------------------------------------------

    @contextmanager
    def _op(self, what: str, failure: type[ReconcileError] = Permanent) -> Iterator[None]:
        """maps paramiko and socket errors to ours; a lost connection is dropped."""
        try:
            yield
        except ReconcileError:
            raise
        except (socket.timeout, TimeoutError):
            self._drop()
            raise Transient(f"{what}: the server stopped answering") from None
        except (paramiko.SSHException, EOFError, paramiko.sftp.SFTPError) as exc:
            self._drop()
            raise Transient(f"{what}: connection lost ({exc.__class__.__name__})") from None
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise NotFound(f"{what}: no such file or folder") from None
            if exc.errno == errno.EACCES:
                raise Permanent(f"{what}: permission denied") from None
            if exc.errno is None and self._connected():
                # an SFTP status from the server, such as "Failure" for a full disk.
                raise failure(f"{what}: {exc.args[0] if exc.args else 'failure'}") from None
            self._drop()
            raise Transient(f"{what}: connection lost ({exc.strerror or exc})") from None


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
