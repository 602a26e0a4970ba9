"""The run's first SSH connection, started while the run starts up (issue 21).

`reconcile apply SRC sftp://...` needs its first SFTP session about 0.2 s
after the process starts (imports, lock, state), and a handshake is several
round trips. start() opens the socket and runs the key exchange in a thread
meanwhile; the first Session._connect of this process for the same target
takes it (take()) and goes on as it always does: host key checked, sign-in,
session. Nothing that can fail in a way the user sees happens here: an
attempt that fails is dropped silently, and the normal path connects and
reports as before. No ProxyCommand (a process of its own) is started early,
nor with an ssh config that has `Match exec` lines (commands to run).

Only one attempt is pending at a time, and only in the process that started
it (a forked child never takes its parent's)."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from urllib.parse import urlsplit

from reconcile.remotes.base import NetStats, RemoteOptions

LIST_IN_A_CHILD_FROM = 10_000  # entries the last run saw: listing.py lists in a forked child from there
TCP_TIMEOUT = 5.0  # longer, and the normal path connects (and waits and reports) itself
HANDSHAKE_TIMEOUT = 20.0  # as session.CONNECT_TIMEOUT
# older, and it is not taken: a server ends a connection that has not signed
# in after its LoginGraceTime (30 s on some), and one ending as the run signs
# in would read as an authentication failure
FRESH_FOR = 10.0

_MATCH_EXEC = re.compile(r"^\s*match\b.*\bexec\b", re.IGNORECASE | re.MULTILINE)
_lock = threading.Lock()
_pending: "_Headstart | None" = None


class _Headstart:
    def __init__(self, url: str, options: RemoteOptions) -> None:
        self.url, self.options = url, options
        self.pid = os.getpid()
        self.target = None  # _Target, once read
        self.transport = None  # paramiko.Transport, keys exchanged (not checked)
        self.wire = None  # session._Wire: counts round trips into net until taken
        self.net = NetStats()
        self.ready_at = 0.0  # when the key exchange ended
        self.dropped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sftp-headstart", daemon=True)

    def _run(self) -> None:
        try:
            self._handshake()
        except BaseException:  # noqa: BLE001 (any failure: the normal path connects and says why)
            self._close()
        if self.dropped.is_set():
            self._close()

    def _handshake(self) -> None:
        if _runs_commands(self.options):
            return
        sock, where = _socket_before_paramiko(self.url, self.options)
        from reconcile.remotes.sftp.target import _parse_url  # paramiko, with an ssh config to read

        self.target, _, _ = _parse_url(self.url, self.options)
        if self.target.proxy_command or self.dropped.is_set():
            _close_socket(sock)
            return
        if sock is not None and where != (self.target.host, self.target.port):
            _close_socket(sock)  # an ssh config appeared meanwhile: not where it says
            sock = None
        if sock is None:
            sock = _open(self.target.host, self.target.port)
        from reconcile.remotes.sftp.auth import known_key_types
        from reconcile.remotes.sftp.loader import paramiko
        from reconcile.remotes.sftp.session import WINDOW, _Wire, prefer_algorithms

        self.wire = _Wire(sock, self.net)
        self.net.connections += 1
        transport = paramiko.Transport(self.wire, default_window_size=WINDOW)
        self.transport = transport
        prefer_algorithms(transport, known_key_types(self.target))
        transport.start_client(timeout=HANDSHAKE_TIMEOUT)
        self.ready_at = time.monotonic()

    def _close(self) -> None:
        transport, self.transport = self.transport, None
        if transport is not None:
            from reconcile.remotes.sftp.session import _close_transport

            _close_transport(transport)
        elif self.wire is not None:
            _close_socket(self.wire)

    def drop(self, wait: bool = True) -> None:
        """closed, with wait its thread ended (a fork must not meet it); a
        thread still connecting closes what it opened when it ends."""
        self.dropped.set()
        if wait:
            self.thread.join(TCP_TIMEOUT + HANDSHAKE_TIMEOUT)
        if not self.thread.is_alive():
            self._close()


def _runs_commands(options: RemoteOptions) -> bool:
    """the ssh config has a `Match exec` line: its command is the run's to
    run, once, not this thread's (nor is a ProxyCommand's process)."""
    from reconcile.remotes.sftp.target import _ssh_config_path

    try:
        with open(_ssh_config_path(options), encoding="utf-8", errors="replace") as f:
            return _MATCH_EXEC.search(f.read()) is not None
    except OSError:
        return False  # none (or unreadable: the run says so)


def _socket_before_paramiko(url: str, options: RemoteOptions) -> tuple[socket.socket | None, tuple]:
    """with no ssh config to read, the URL says where to connect: the socket
    opens before paramiko is imported (about 60 ms of CPU); and where to."""
    from reconcile.remotes.sftp.target import _ssh_config_path, check_host_name

    parts = urlsplit(url)
    if os.path.exists(_ssh_config_path(options)) or not parts.hostname:
        return None, ()
    check_host_name(parts.hostname)
    where = (parts.hostname, parts.port or 22)
    return _open(*where), where


def _open(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=TCP_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _close_socket(sock) -> None:
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass


def start(url: str, options: RemoteOptions) -> None:
    """start connecting to url's server (one attempt pending at a time; one
    for the same url already pending is kept). Not where the listing will
    run in a forked child on a connection of its own (a tree the last run
    saw large): this one would be closed unused before the fork, and leave
    a line in the server's log (fail2ban may count those) on every run."""
    global _pending
    if options.expected_entries >= LIST_IN_A_CHILD_FROM:
        from reconcile import forked

        if forked.available():
            return
    started = _Headstart(url, options)
    with _lock:
        if _pending is not None and _pending.pid == os.getpid() and _pending.url == url:
            return  # started from the arguments already (cli/early.py): take() compares the targets
        old, _pending = _pending, started
    if old is not None and old.pid == os.getpid():
        old.drop()
    started.thread.start()
    # paramiko (about 60 ms of CPU) imported here, first, while the thread
    # waits on the network: the key exchange then starts at once, not after
    # the thread got its share of the CPU from the caller's own imports
    from reconcile.remotes.sftp import loader  # noqa: F401


def take(target, net: NetStats):
    """the pending connection to target, its keys exchanged (not checked), its
    counts added to net; None where there is none, it failed, or it is
    another target's (dropped then)."""
    global _pending
    with _lock:
        started, _pending = _pending, None
    if started is None or started.pid != os.getpid():
        return None
    started.thread.join(TCP_TIMEOUT + HANDSHAKE_TIMEOUT)  # its own timeouts end it before
    if started.thread.is_alive():
        started.dropped.set()  # it closes what it opened when it ends
        return None
    transport = started.transport
    if transport is None or started.target != target or not transport.is_active() or \
            time.monotonic() - started.ready_at > FRESH_FOR:
        started.drop()
        return None
    started.wire._stats = net
    net.add(started.net.as_list())
    return transport


def discard(wait: bool = True) -> None:
    """the pending connection, if any, closed: before a fork (wait: its
    thread ended), at a run's end (not waited for)."""
    global _pending
    with _lock:
        started, _pending = _pending, None
    if started is not None and started.pid == os.getpid():
        started.drop(wait)


def pending() -> bool:
    return _pending is not None and _pending.pid == os.getpid()
