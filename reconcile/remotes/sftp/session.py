"""How an SFTP remote connects: connections and the SFTP sessions (channels)
threads open on them, what they cost (NetStats), and paramiko's errors mapped
to ours. Where it connects (the URL, the ssh config) is target.py; host keys
and authentication are auth.py.

One connection (one ssh handshake: seven round trips or more) carries a
session per thread; one more session costs three round trips. Each session is
its own SFTPClient (sharing one client across threads can deadlock, paramiko
issue 1836). A server that refuses a second session gets a connection per
session, as before."""

from __future__ import annotations

import errno
import select
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator

from reconcile.errors import NotFound, Permanent, ReconcileError
from reconcile.errors import Refused, Transient, Unreachable, UnresolvedHost
from reconcile.remotes.base import NetStats
from reconcile.remotes.sftp import headstart
from reconcile.remotes.sftp.ahead import SessionsAhead
from reconcile.remotes.sftp.auth import Auth
from reconcile.remotes.sftp.eager import WINDOW, EarlyChannel
from reconcile.remotes.sftp.loader import paramiko
from reconcile.remotes.sftp.wire import _LIMITS_EXT, _Limits, _Replies, settle
from paramiko.sftp import CMD_EXTENDED, CMD_INIT, CMD_LSTAT, CMD_VERSION

SFTP_VERSION = 3  # paramiko's
CONNECT_TIMEOUT = 20.0
IO_TIMEOUT = 60.0  # a silent server for this long counts as a lost connection
CLOSE_WAIT = 5.0  # for a closed connection's thread to end
READ_AHEAD = 1 << 16  # bytes one read off the socket may take (paramiko then takes them from _Wire)
# from this round trip a first sync's small files wait on the link, not the
# CPU: no upload child (its handshake would cost more than its core saves)
LINK_BOUND_RTT = 0.02
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


class _Conn:
    """an SFTP session: its own channel, on a connection (transport) it owns
    or shares with other sessions."""

    def __init__(self, transport: paramiko.Transport, sftp: paramiko.SFTPClient, owns_transport: bool = True) -> None:
        self.transport = transport
        self.sftp = sftp
        self.owns_transport = owns_transport
        self.clean = False  # a listing over it ended with nothing left unread
        self.finish: Callable[[], bool] | None = None  # settles a listing (its last replies left to the next reader): clean after?
        self.no_fsync = False
        self.no_posix_rename = False
        self.limits = getattr(sftp, "early_limits", None) or _Limits(sftp)
        self.rtt = 0.0  # the link's round trip, about (measured on opening the session)

    @property
    def write_chunk(self) -> int:
        return self.limits.get()[0]

    @property
    def read_chunk(self) -> int:
        return self.limits.get()[1]

    @property
    def max_handles(self) -> int:
        return self.limits.get()[2]

    def close(self) -> None:
        try:
            if self.transport.is_active():
                settle(self.sftp)
            self.sftp.close()
        except Exception:
            pass
        if self.owns_transport:
            _close_transport(self.transport)


def _close_transport(transport: paramiko.Transport) -> None:
    if transport is not threading.current_thread():
        # its thread polls its socket every 0.1 s: woken at once instead (it
        # reads the end of the stream, and closes what it holds); every run
        # ended up to 0.1 s later
        _shut_down(transport.sock)
    transport.close()
    if transport is not threading.current_thread():
        # paramiko does not wait for its thread: a fork (forked.py) must see it gone
        transport.join(CLOSE_WAIT)


def _shut_down(sock) -> None:
    """both ways, where sock is a socket (a ProxyCommand is not)."""
    if isinstance(sock, (socket.socket, _Wire)):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # closed already


def _sftp_client(transport: paramiko.Transport, early: EarlyChannel | None = None,
                 lstats: list[bytes] = ()) -> tuple[paramiko.SFTPClient | None, float]:
    """paramiko's SFTPClient.from_transport (on the channel asked for behind
    the sign-in, if any), and how long SFTP's INIT took to be answered: one
    round trip of the link, about (the subsystem's start on the server, in
    the round trip before it, is left out)."""
    chan = early.wait(CONNECT_TIMEOUT) if early is not None else transport.open_session(window_size=WINDOW)
    if chan is None:
        return None, 0.0
    chan.invoke_subsystem("sftp")
    started = time.monotonic()
    if transport.remote_version.startswith("SSH-2.0-OpenSSH"):
        sftp = _LimitsWithInit.__new__(_LimitsWithInit)
        sftp.lstats_with_init = lstats
        sftp.__init__(chan)
    else:
        sftp = paramiko.SFTPClient(chan)
    return sftp, time.monotonic() - started


def prefer_algorithms(transport: paramiko.Transport, known_types: set[str]) -> None:
    opts = transport.get_security_options()
    fast = [c for c in FAST_CIPHERS if c in opts.ciphers]
    opts.ciphers = fast + [c for c in opts.ciphers if c not in fast]
    # ask for the host key type we already know, as OpenSSH does
    if known_types:
        first = [k for k in opts.key_types if k in known_types]
        opts.key_types = first + [k for k in opts.key_types if k not in first]


class _LimitsWithInit(paramiko.SFTPClient):
    """paramiko's SFTP client, whose limits@openssh.com request goes out
    together with INIT instead of after its answer: OpenSSH's sftp-server
    serves requests in turn, so the answer is at hand a round trip earlier,
    when a session's first files go out (their number in flight depends on it).
    So do the lstats in lstats_with_init (a first run's probe: where the root
    is), answered into init_replies (wire._lstats takes them from there)."""

    lstats_with_init: list[bytes] = []

    def _send_version(self) -> int:
        num = self.request_number
        self.early_limits = _Limits(self, asked=num)  # held here: paramiko holds its owners weakly
        out = [struct.pack(">IBI", 5, CMD_INIT, SFTP_VERSION),
               struct.pack(">IBI", 5 + len(_LIMITS_EXT), CMD_EXTENDED, num), _LIMITS_EXT]
        self.init_replies = _Replies(self)
        for path in self.lstats_with_init:
            num += 1
            self._expecting[num] = self.init_replies
            self.init_replies.asked[path] = num
            out += [struct.pack(">IBII", 9 + len(path), CMD_LSTAT, num, len(path)), path]
        self.request_number = num + 1
        self._write_all(b"".join(out))
        t, data = self._read_packet()
        if t != CMD_VERSION:
            raise paramiko.sftp.SFTPError("Incompatible sftp protocol")
        return struct.unpack(">I", data[:4])[0]


class _Wire:
    """a connection's socket, counting into stats the round trips waited on,
    and read ahead: paramiko asks for each packet in two reads (its first
    block, then the rest), each a poll and a recv on a socket with a timeout;
    one read of all that has come serves many packets, which on a stream of
    small replies was most of the packet thread's system calls."""

    def __init__(self, sock: socket.socket, stats: NetStats) -> None:
        self._sock = sock
        self._stats = stats
        self._asked = False  # something was sent since the last wait
        self._ahead = b""  # read off the socket, not yet handed to paramiko, from _pos on
        self._pos = 0

    def send(self, data) -> int:
        self._asked = True
        return self._sock.send(data)

    def sendall(self, data) -> None:
        self._asked = True
        self._sock.sendall(data)

    def recv(self, n: int) -> bytes:
        ahead, pos = self._ahead, self._pos
        if pos < len(ahead):
            self._pos = pos + n
            return ahead[pos:pos + n]
        if self._asked and not select.select([self._sock], [], [], 0)[0]:
            self._asked = False
            with self._stats.lock:  # every connection's thread counts into one total
                self._stats.round_trips += 1
        data = self._sock.recv(max(n, READ_AHEAD))
        if len(data) <= n:
            return data
        self._ahead, self._pos = data, n
        return data[:n]

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


class _NoSession(Exception):
    """the server would not open one more channel on a connection."""


class Session(Auth):
    """connections of an SftpRemote; host keys and authentication (Auth) on them."""

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
        self._sessions_ahead = SessionsAhead()
        self._lstats_with_init: list[bytes] = []  # sent with the next session's INIT (a probe's, remote.py)
        self._root_maker: threading.Event | None = None  # set once a pipeline making the root knows (batch.py)
        self._pool: ThreadPoolExecutor | None = None
        self._inherited_home = getattr(self, "_home", None)
        self._home: paramiko.Transport | None = None  # the connection new sessions are opened on
        self._connecting = threading.Lock()
        self._one_session = False  # the server allows one session per connection
        # a listing's session and thread: the session serves the next thread once its last replies are read
        self._handoff: tuple[threading.Thread | None, _Conn] | None = None
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
        """a new SFTP session: an idle one, one opened ahead, or a channel on
        the connection already open, or else (the first, or a server that
        allows one session per connection) a connection of its own."""
        ahead = self._sessions_ahead.take(CONNECT_TIMEOUT)
        if ahead is not None and ahead.transport.is_active():
            return ahead
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

    def open_sessions_ahead(self, count: int) -> None:
        """count more sessions on the run's connection, opened now in threads
        of their own (ahead.py), for the upload threads to take."""
        with self._connecting:
            home = self._home if not self._one_session else None
        if home is not None and home.is_active() and count > 0:
            self._sessions_ahead.start(count, lambda: self._open_session(home, owns_transport=False))

    def _hand_on(self, lister: threading.Thread | None, conn: _Conn) -> None:
        """a listing that ended: its session serves the next thread that needs
        one, once the listing thread (if any) has read the last replies (not
        waited for here: a run with nothing to do never waits for them)."""
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
        if lister is not None:
            lister.join(IO_TIMEOUT)
        if (lister is None or not lister.is_alive()) and conn.clean and conn.transport.is_active():
            return conn
        conn.close()  # wakes a listing thread still waiting on the server
        if lister is not None:
            lister.join(CLOSE_WAIT)
        return None

    def close_sessions(self) -> None:
        """close every session, then the shared connection."""
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            conn.close()
        self._sessions_ahead.close()
        with self._connecting:
            home, self._home = self._home, None
            handoff, self._handoff = self._handoff, None
        if handoff is not None:
            lister, conn = handoff
            conn.close()  # its last replies are not needed
            if lister is not None:
                lister.join(CLOSE_WAIT)
        if home is not None:
            _close_transport(home)
        self._local = threading.local()
        headstart.discard()  # not taken: this run needed none, or lists in a forked child

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
        # the connection started while the run started up (headstart.py), or a new one
        transport = headstart.take(self.target, self.net) or self._handshake()
        try:
            self._check_host_key(transport.get_remote_server_key())
            early = self._authenticate(transport)
            try:
                return self._open_session(transport, owns_transport=True, early=early)
            except _NoSession as exc:
                raise Transient(f"no sftp subsystem on {self._where()}: {exc}") from None
        except BaseException:
            transport.close()
            raise

    def _handshake(self) -> paramiko.Transport:
        """a new connection, its keys exchanged (the host key not checked yet)."""
        sock = self._open_socket()
        if isinstance(sock, socket.socket):
            sock = _Wire(sock, self.net)
        with self.net.lock:
            self.net.connections += 1
        transport = paramiko.Transport(sock, default_window_size=WINDOW)
        try:
            prefer_algorithms(transport, self._known_types())
            try:
                transport.start_client(timeout=CONNECT_TIMEOUT)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise Unreachable(f"no ssh session with {self._where()}: {exc}") from None
        except BaseException:
            transport.close()
            raise
        return transport

    def _open_session(self, transport: paramiko.Transport, owns_transport: bool,
                      early: EarlyChannel | None = None) -> _Conn:
        """a channel running the sftp subsystem: three round trips (open,
        subsystem, SFTP's INIT; sshd opens the channel's window only once the
        subsystem runs, so they cannot go out together), two where the channel
        was asked for behind the sign-in (early)."""
        with self.net.lock:
            self.net.sessions += 1
        try:
            sftp, rtt = _sftp_client(transport, early, self._lstats_with_init)
        except paramiko.ChannelException as exc:
            raise _NoSession(str(exc)) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise Transient(f"no sftp subsystem on {self._where()}: {exc}") from None
        if sftp is None:
            raise Permanent(f"{self._where()} refused the sftp subsystem")
        sftp.get_channel().settimeout(IO_TIMEOUT)
        conn = _Conn(transport, sftp, owns_transport)
        conn.rtt = rtt
        with self.net.lock:
            self._rtt = conn.rtt if self._rtt is None else min(self._rtt, conn.rtt)
        return conn

    def link_bound(self) -> bool:
        """(Remote.link_bound) the round trip measured on opening a session
        is long enough that many small uploads wait on the link, not on this
        machine's CPU: a second process would only add an ssh handshake."""
        return self._rtt is not None and self._rtt >= LINK_BOUND_RTT

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


