"""An SFTP server as the destination, over paramiko.

URL: sftp://[user@]host[:port]/path. The path is absolute on the server:
sftp://nas/backup/x is /backup/x. A path starting with /~ is relative to the
login directory: sftp://nas/~/backup is backup under the user's home.

Host, port, user and identity files also come from the ssh config
(~/.ssh/config, or the file named by RECONCILE_SSH_CONFIG or
options.extra["ssh_config"]), so Host aliases work as they do for ssh.

Each calling thread gets its own Transport and SFTPClient over its own socket
(sharing one client across threads can deadlock, paramiko issue 1836). After a
lost connection the thread's client is dropped and the next call reconnects.
Only this module imports paramiko; callers see reconcile.errors only.
"""

from __future__ import annotations

import errno
import getpass
import re
import secrets
import hashlib
import logging
import os
import queue
import socket
import stat as st
import struct
import sys
import threading
import time
from collections import deque
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import BinaryIO, Callable, Iterable, Iterator, Protocol
from urllib.parse import unquote, urlsplit

# paramiko imports invoke (about 40 ms at every start) only to run `Match exec`
# lines of an ssh config; it is loaded when a config has one (_config_lookup)
_HIDE_INVOKE = "invoke" not in sys.modules
if _HIDE_INVOKE:
    sys.modules["invoke"] = None  # type: ignore[assignment]
try:
    import paramiko
    import paramiko.config
finally:
    if _HIDE_INVOKE:
        del sys.modules["invoke"]
from paramiko.sftp import (CMD_CLOSE, CMD_DATA, CMD_EXTENDED, CMD_EXTENDED_REPLY, CMD_FSETSTAT, CMD_HANDLE,
                           CMD_MKDIR, CMD_NAME, CMD_OPEN, CMD_OPENDIR, CMD_READ, CMD_READDIR, CMD_READLINK,
                           CMD_REALPATH, CMD_STATUS, CMD_WRITE, SFTP_EOF, int64)
from paramiko.sftp_attr import SFTPAttributes
import xxhash

from reconcile import forked
from reconcile.entry import DIR, FILE, LINK, TEMP_MARK, Entry, decode_path, encode_path, is_temp_name
from reconcile.entry import entry_of, is_safe_path, parent_of, sort_key
from reconcile.errors import AuthError, ConfigError, NotFound, Permanent, ReconcileError, SourceChanged
from reconcile.errors import Transient, Unreachable, UnresolvedHost
from reconcile.hashing import FileHasher
from reconcile.remotes import findlist, ssh_send
from reconcile.remotes.base import Capabilities, Checkpoint, Progress, RemoteOptions, local_output
from reconcile.remotes.local import current_umask, final_mode

# paramiko logs a lost handshake with a traceback (Python's last-resort handler
# prints it); we report such errors ourselves, in one line
logging.getLogger("paramiko").addHandler(logging.NullHandler())

CONNECT_TIMEOUT = 20.0
IO_TIMEOUT = 60.0  # a silent server for this long counts as a lost connection
CLOSE_WAIT = 5.0  # for a closed connection's thread to end
WINDOW = 32 << 20  # ssh channel window: large, so pipelined writes never stall on it
SAFE_CHUNK = 1 << 15  # every SFTP server takes 32 KiB reads and writes
MAX_CHUNK = 255 << 10  # larger requests where the server says it takes them (limits@openssh.com)
MAX_INFLIGHT_BYTES = 4 << 20  # sent before waiting for the oldest ack
CHECKPOINT_EVERY = 16 << 20
RANGE_MIN = 64 << 20  # files this large are written as concurrent ranges
LIST_PREFETCH = 128  # folders listed ahead of the consumer
READ_AHEAD = 3  # READDIRs sent together per folder (OpenSSH answers 100 names each)
FIND_FROM = 10_000  # entries from which a tree is listed by find over ssh (ssh_find = "auto")
FIND_WINDOW = 4 << 20  # the listing unread in this process stays below this
FIND_POLL = 1.0  # seconds between looks at stderr while find runs
FIND_PATIENCE = 3600.0  # a find | sort silent this long (connection alive) is given up
ROW_BATCH, ROW_BATCHES = 256, 8  # rows handed from the listing thread at a time; batches queued
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
MAX_MTIME = (1 << 32) - 1  # SFTP v3 carries mtime as uint32 seconds
SMALL_FILE = 1 << 20  # whole files up to this size may go through upload_many
BATCH_FILES = 64  # small files in flight per connection
SEND_PIECE = 1 << 15  # bytes per channel send when flushing batched requests
FLUSH_AT = 1 << 16  # queued request bytes sent even while replies keep coming
MAX_REPLY = 1 << 24  # a longer reply length is garbage
FX_OK, FX_NO_SUCH_FILE, FX_PERMISSION_DENIED, FX_OP_UNSUPPORTED = 0, 2, 3, 8
# SSH_FXF_WRITE | CREAT | TRUNC | EXCL: a temp file is always new, so a symlink
# or file planted at its name makes the open fail instead of being written through
OPEN_WRITE = 0x02 | 0x08 | 0x10 | 0x20
UMASK = current_umask()  # a sent file's mode: the source's, masked by it (rsync without -p)
TEMP_MODE = 0o600
MAX_DEPTH = 800  # folders below the root a listing follows (Python's recursion stops near 1000)  # what a temp file holds is private until it has its final mode
ATTR_PERMS, ATTR_TIMES = 0x04, 0x08


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
    def __init__(self, transport: paramiko.Transport, sftp: paramiko.SFTPClient) -> None:
        self.transport = transport
        self.sftp = sftp
        self.no_fsync = False
        self.no_posix_rename = False
        self.write_chunk, self.read_chunk = _chunk_limits(sftp)

    def close(self) -> None:
        try:
            self.sftp.close()
        except Exception:
            pass
        self.transport.close()
        if self.transport is not threading.current_thread():
            # paramiko does not wait for its thread: a fork (forked.py) must see it gone
            self.transport.join(CLOSE_WAIT)


class _Acks:
    """collects replies to pipelined requests by number, in any order: the
    error (or None) for writes, the data (or EOFError) for reads."""

    def __init__(self, sftp: paramiko.SFTPClient) -> None:
        self.sftp = sftp
        self.done: dict[int, BaseException | bytes | None] = {}

    def _async_response(self, t: int, msg: paramiko.Message, num: int) -> None:
        result: BaseException | bytes | None = None
        if t == CMD_STATUS:
            try:
                self.sftp._convert_status(msg)
            except BaseException as exc:
                result = exc
        elif t == CMD_DATA:
            result = msg.get_string()
        self.done[num] = result

    def wait(self, num: int) -> BaseException | bytes | None:
        while num not in self.done:
            self.sftp._read_response()
        return self.done.pop(num)


class SmallUpload(Protocol):
    """one whole file for upload_many (apply.SmallUpload)."""

    local_path: str
    path: str
    entry: Entry
    hash: bytes | None  # set here: the xxh3 of what was sent


@dataclass(slots=True, eq=False)
class _Small:
    item: SmallUpload
    data: bytes
    size: int
    tmp_rel: str
    tmp: bytes
    dst: bytes
    attrs: bytes
    pending: int = 0  # requests not yet answered
    ok: bool = True  # every answer so far was OK
    sent: bool = False  # the temp file is complete
    reopened: bool = False  # opened again after creating its folder


_RENAME_EXT = struct.pack(">I", 24) + b"posix-rename@openssh.com"
_OPEN_ARGS = struct.pack(">III", OPEN_WRITE, ATTR_PERMS, TEMP_MODE)  # pflags, attributes
_NO_ATTRS = struct.pack(">I", 0)
_FSYNC_EXT = struct.pack(">I", 17) + b"fsync@openssh.com"


class _Pipe:
    """raw SFTP requests queued and sent together (one channel write for many
    small requests), and their replies parsed straight off the channel. While
    a pipe has requests out, nothing else may use its connection."""

    def __init__(self, sftp: paramiko.SFTPClient) -> None:
        self.sftp = sftp
        self.chan = sftp.sock
        self.out: list[bytes] = []
        self.queued = 0  # bytes in out
        self.buf = b""  # replies read, not yet parsed from pos on
        self.pos = 0
        self.wbuf = bytearray()  # write_from's request, reused (the send copies it)
        self.send = partial(ssh_send.send_data, self.chan) if ssh_send.supported(self.chan) else self.chan.send

    def request(self, t: int, *parts: bytes) -> int:
        if self.queued >= FLUSH_AT:
            self.flush()
        num = self._number()
        size = sum(map(len, parts))
        self.out.append(struct.pack(">IBI", 5 + size, t, num))
        self.out.extend(parts)
        self.queued += 9 + size
        return num

    def write_from(self, handle: bytes, fd: int, pos: int, n: int, hasher=None) -> tuple[int, int]:
        """one WRITE of fd[pos:pos + n], read straight into the request and sent
        from there: paramiko copies each byte often enough. (number, bytes read)"""
        self.flush()
        h = _sftp_str(handle)
        head = 9 + len(h) + 12
        if len(self.wbuf) < head + n:
            self.wbuf = bytearray(head + n)
        view = memoryview(self.wbuf)
        got = _preadv(fd, view[head:head + n], pos)
        if hasher is not None:
            hasher.update(view[head:head + got])
        num = self._number()
        struct.pack_into(f">IBI{len(h)}sQI", self.wbuf, 0, head - 4 + got, CMD_WRITE, num, h, pos, got)
        self._send(view[:head + got])
        return num, got

    def reply(self, num: int, replies: dict[int, tuple[int, bytes]], asked) -> tuple[int, bytes]:
        """(type, body) of the reply to request num; others read on the way are
        kept in replies. A number not among asked ((num, ...) tuples) is garbage."""
        while num not in replies:
            got, t, body = self.next()
            if got != num and not any(a[0] == got for a in asked):
                raise paramiko.sftp.SFTPError(f"a reply to request {got}, which was never sent")
            replies[got] = (t, body)
        return replies.pop(num)

    def ready(self) -> bool:
        """a reply can be read without waiting."""
        return self._whole() > 0 or self.chan.recv_ready()

    def _number(self) -> int:
        sftp = self.sftp
        with sftp._lock:  # numbers shared with paramiko's own requests
            num = sftp.request_number
            sftp.request_number = num + 1
        return num

    def flush(self) -> None:
        if not self.out:
            return
        data = b"".join(self.out)
        self.out.clear()
        self.queued = 0
        self._send(memoryview(data))

    def _send(self, data: memoryview) -> None:
        off = 0
        while off < len(data):
            n = self.send(data[off:off + SEND_PIECE])
            if n <= 0:
                raise EOFError("the channel closed")
            off += n

    def _whole(self) -> int:
        """the length of the first reply when all of it is here, else 0."""
        buf, pos = self.buf, self.pos
        if len(buf) - pos < 4:
            return 0
        n = int.from_bytes(buf[pos:pos + 4], "big")
        if n > MAX_REPLY or n < 5:
            raise paramiko.sftp.SFTPError("garbage reply")
        return n if len(buf) - pos - 4 >= n else 0

    def next(self) -> tuple[int, int, bytes]:
        """(request number, type, body) of the next reply."""
        while not (n := self._whole()):
            data = self.chan.recv(1 << 16)
            if not data:
                raise EOFError("the channel closed")
            self.buf, self.pos = self.buf[self.pos:] + data, 0
        buf, pos = self.buf, self.pos
        self.pos = pos + 4 + n
        return int.from_bytes(buf[pos + 5:pos + 9], "big"), buf[pos + 4], buf[pos + 9:pos + 4 + n]

    @property
    def idle(self) -> bool:
        """nothing left unread: the connection can serve plain calls again."""
        return self.pos == len(self.buf) and not self.chan.recv_ready()


_TEMP = TEMP_MARK.encode()


class _Dir:
    __slots__ = ("key", "raw", "links", "left", "reads", "ended", "error", "finished")

    def __init__(self, key: bytes) -> None:
        self.key = key  # encoded path under the root, b"" for the root
        self.raw: list[tuple[bytes, int, int, int | None]] = []
        self.links: dict[bytes, str | None] = {}  # symlink name -> target, once read
        self.left = 0  # READLINKs not yet answered
        self.reads = 0  # READDIRs not yet answered
        self.ended = False  # EOF or an error came back
        self.error: ReconcileError | None = None
        self.finished = False


class _Lister:
    """many folders listed at once over one connection: OPENDIR, READDIR until
    EOF, then CLOSE (not waited for) and READLINK for symlinks, all through
    one _Pipe. take() drives the replies until the folder asked for is done."""

    def __init__(self, remote: "SftpRemote", sftp: paramiko.SFTPClient, temps: list[str]) -> None:
        self.remote = remote
        self.pipe = _Pipe(sftp)
        self.temps = temps
        self.dirs: dict[bytes, _Dir] = {}
        self.waiting: dict[int, tuple[_Dir | None, int, bytes]] = {}  # request -> (folder, stage, name)

    @property
    def pending(self) -> int:
        return len(self.dirs)

    def want(self, key: bytes) -> None:
        d = self.dirs[key] = _Dir(key)
        path = self.remote._abs(decode_path(key))
        self.waiting[self.pipe.request(CMD_OPENDIR, _sftp_str(path))] = (d, 0, b"")

    def take(self, key: bytes) -> list[tuple]:
        """the folder's rows, sorted; NotFound when it is gone."""
        if key not in self.dirs:
            self.want(key)
        d = self.dirs[key]
        while not d.finished:
            self._step()
        del self.dirs[key]
        if d.error is not None:
            raise d.error
        return self._rows(d)

    def _step(self) -> None:
        pipe = self.pipe
        if not pipe.ready():
            pipe.flush()
        num, t, body = pipe.next()
        d, stage, name = _expected(self.waiting, num)
        if d is None:
            return  # a CLOSE
        if stage == 0:  # opened
            if t == CMD_HANDLE:
                self._read_ahead(d, _sftp_str(_handle(body)))
            else:
                self._failed(d, t, body)
        elif stage == 1:  # names, or the end
            d.reads -= 1
            if d.ended:
                pass  # more EOFs after the first
            elif t == CMD_NAME:
                _parse_names(body, d.raw)
                if not d.reads:
                    self._read_ahead(d, name)
                return
            else:
                d.ended = True
                self.waiting[pipe.request(CMD_CLOSE, name)] = (None, 0, b"")  # after the reads still out
                if _status(t, body) != SFTP_EOF:
                    d.error = self._error(d, t, body)
            if not d.reads:
                if d.error is not None:
                    d.finished = True
                else:
                    self._ask_links(d)
        else:  # a symlink's target
            d.links[name] = decode_path(_first_name(body)) if t == CMD_NAME else None
            d.left -= 1
            d.finished = d.left == 0

    def _read_ahead(self, d: _Dir, handle: bytes) -> None:
        """several READDIRs at once: a folder of up to ~200 names takes one round trip."""
        for _ in range(READ_AHEAD):
            self.waiting[self.pipe.request(CMD_READDIR, handle)] = (d, 1, handle)
        d.reads += READ_AHEAD

    def _ask_links(self, d: _Dir) -> None:
        head = d.key + b"/" if d.key else b""
        for name, mode, _size, _mtime in d.raw:
            if st.S_ISLNK(mode) and _TEMP not in name:
                d.left += 1
                path = self.remote._abs(decode_path(head + name))
                self.waiting[self.pipe.request(CMD_READLINK, _sftp_str(path))] = (d, 2, name)
        d.finished = d.left == 0

    def _failed(self, d: _Dir, t: int, body: bytes) -> None:
        d.error = self._error(d, t, body)
        d.finished = True

    def _error(self, d: _Dir, t: int, body: bytes) -> ReconcileError:
        code = _status(t, body)
        what = f"cannot list {decode_path(d.key) or self.remote.url}"
        if code == FX_NO_SUCH_FILE:
            return NotFound(f"{what}: no such file or folder")
        if code == FX_PERMISSION_DENIED:
            return Permanent(f"{what}: permission denied")
        return Permanent(f"{what}: {_status_text(t, body)}")

    def _rows(self, d: _Dir) -> list[tuple]:
        head = d.key + b"/" if d.key else b""
        rows = []
        for name, mode, size, mtime in d.raw:
            if _TEMP in name:
                self.temps.append(decode_path(head + name))
                continue
            kind = DIR if st.S_ISDIR(mode) else LINK if st.S_ISLNK(mode) else FILE
            rows.append((head + name + b"/" if kind == DIR else head + name, kind, size if kind == FILE else 0,
                         None if mtime is None else mtime * 1_000_000_000, 0, 0, mode, None,
                         d.links.get(name), None))
        rows.sort(key=_first)
        return rows


def _first(row: tuple) -> bytes:
    return row[0]


def _first_name(body: bytes) -> bytes:
    """the name in a one-entry SSH_FXP_NAME body (a READLINK reply)."""
    n = int.from_bytes(body[4:8], "big")
    return body[8:8 + n]


def _status_text(t: int, body: bytes) -> str:
    if t != CMD_STATUS:
        return "unexpected reply"
    n = int.from_bytes(body[4:8], "big")
    return body[8:8 + n].decode("utf-8", "replace") or "failure"


def _expected(waiting: dict, num: int):
    """what a reply answers; a number never asked is a broken connection."""
    try:
        return waiting.pop(num)
    except KeyError:
        raise paramiko.sftp.SFTPError(f"a reply to request {num}, which was never sent") from None


def _sftp_str(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def _status(t: int, body: bytes) -> int:
    """the status code of a reply; -1 for anything but a status."""
    return int.from_bytes(body[:4], "big") if t == CMD_STATUS else -1


def _handle(body: bytes) -> bytes:
    return body[4:4 + int.from_bytes(body[:4], "big")]


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


def _parse_url(url: str, options: RemoteOptions) -> tuple[_Target, str, str]:
    parts = urlsplit(url)
    if parts.scheme.lower() != "sftp" or not parts.hostname:
        raise ConfigError(f"not an sftp URL: {url!r}; use sftp://[user@]host[:port]/path")
    if parts.password is not None:
        raise ConfigError("do not put a password in the URL: set RECONCILE_SFTP_PASSWORD instead")
    try:
        url_port = parts.port
    except ValueError:
        raise ConfigError(f"bad port in {url!r}") from None
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


class SftpRemote:
    capabilities = Capabilities(
        server_move=True, dir_move=True, server_copy=False, empty_dirs=True,
        mtime_precision_ns=1_000_000_000, symlinks=True, set_mtime=True,
    )

    def __init__(self, target: _Target, root: str, options: RemoteOptions, url: str) -> None:
        self.target = target
        self.root = root
        self.options = options
        self.url = url
        self.transfers = options.transfers or 4
        self._fresh_connection_state()
        self._trusted_key: bytes | None = None
        self._secrets: dict[str, str | None] = {}
        self._seen_temps: list[str] | None = None  # temp names met by the last full list()
        self._left_temps: set[str] = set()  # temp files our failed uploads left
        self._dirs_seen: set[str] = set()  # folders upload_many made or found
        self._root_ready = False  # the destination root is known to exist

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

    def forget_connections(self) -> None:
        """in a forked child (upload_child): the parent's connections are not
        ours to use or close; the next call connects afresh."""
        self._fresh_connection_state()

    @classmethod
    def from_url(cls, url: str, options: RemoteOptions) -> "SftpRemote":
        target, root, shown = _parse_url(url, options)
        return cls(target, root, options, shown)

    # --- connections -------------------------------------------------------

    def _conn(self) -> _Conn:
        conn = getattr(self._local, "conn", None)
        if conn is None or not conn.transport.is_active():
            if conn is not None:
                self._drop()
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._conns.add(conn)
        return conn

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
                sftp = paramiko.SFTPClient.from_transport(transport, window_size=WINDOW)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise Transient(f"no sftp subsystem on {self._where()}: {exc}") from None
            if sftp is None:
                raise Permanent(f"{self._where()} refused the sftp subsystem")
            sftp.get_channel().settimeout(IO_TIMEOUT)
            return _Conn(transport, sftp)
        except BaseException:
            transport.close()
            raise

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
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
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
                raise ConfigError(f"cannot read ssh key file {path}: {exc.__class__.__name__}") from None
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

    # --- paths -------------------------------------------------------------

    def _abs(self, path: str) -> bytes:
        if not path:
            return encode_path(self.root)
        return encode_path(f"{self.root.rstrip('/')}/{path}" if self.root != "." else path)

    def _temp_for(self, path: str) -> str:
        """a name no one can guess ahead (a server user could otherwise plant a
        symlink there); a resumed upload finds its own in the journal."""
        head, _, name = path.rpartition("/")
        tmp = f"{TEMP_MARK}{secrets.token_hex(8)}-{_short(name)}"
        return f"{head}/{tmp}" if head else tmp

    # --- listing -----------------------------------------------------------

    def list(self) -> Iterator[Entry]:
        return map(entry_of, self.list_rows())

    def list_rows(self) -> Iterator[tuple]:
        """the listing as rows (entry.row_of), in sort_key order. Listings are
        pipelined over a connection of their own: many folders' OPENDIR and
        READDIR in flight at once, replies parsed with struct. Where it can,
        a child process lists (its own connection, paramiko's packet work on
        the second core) while this one walks the source and merges."""
        rows = self._listed_rows()
        try:
            first = next(rows, None)
        except NotFound:
            # no root yet, so no temp files in it: none to look for after the run
            self._seen_temps = []
            raise
        if first is not None:
            yield first
            yield from rows

    def _listed_rows(self) -> Iterator[tuple]:
        temps: list[str] = []
        if forked.available():
            if self._may_prompt() and not self._connected():
                with self._op(f"cannot list {self.url}"):
                    self._sftp()  # a prompted secret is asked here once, and kept for later connections
            self._close_for_fork()
            yield from forked.rows(lambda: self._child_runs(temps), tail=(lambda: temps, temps.extend),
                                   here=lambda: self._runs_here(temps))
        else:
            for run in self._runs_here(temps):
                yield from run
        self._seen_temps = temps

    def _close_for_fork(self) -> None:
        """no thread of a connection of ours may run at the fork (forked.py):
        close them; the next call connects afresh."""
        if self._conns or self._pool is not None:
            self.close()

    def _runs_here(self, temps: list[str]) -> Iterator[list[tuple]]:
        """the listing in this process, in runs of rows."""
        conn = self._connect()
        with self._lock:
            self._conns.add(conn)
        stop = threading.Event()
        lister: threading.Thread | None = None
        try:
            out: queue.Queue = queue.Queue(ROW_BATCHES)
            # a thread of its own, so the replies are read while the caller
            # waits on its own disk (the source walk's lstat)
            lister = threading.Thread(target=self._list_into, args=(conn, temps, out, stop),
                                      name="sftp-list", daemon=True)
            lister.start()
            while (batch := out.get()) is not None:
                if isinstance(batch, BaseException):
                    raise batch
                yield batch
        finally:
            stop.set()
            with self._lock:
                self._conns.discard(conn)
            conn.close()  # wakes a lister waiting on the server
            if lister is not None:
                lister.join()

    def _may_prompt(self) -> bool:
        return sys.stdin is not None and sys.stdin.isatty() and not (
            os.environ.get("RECONCILE_SFTP_PASSWORD") and os.environ.get("RECONCILE_SSH_KEY_PASSPHRASE"))

    def _child_runs(self, temps: list[str]) -> Iterator[list[tuple]]:
        """in the forked child: the parent's connections and locks are not ours."""
        self._fresh_connection_state()
        return self._row_runs(self._connect(), temps)

    def _row_runs(self, conn: _Conn, temps: list[str]) -> Iterator[list[tuple]]:
        """the listing over conn, in runs of ROW_BATCH rows; temp names go to temps."""
        with self._op(f"cannot list {self.url}"):
            attr = conn.sftp.stat(self._abs(""))
        if not st.S_ISDIR(attr.st_mode or 0):
            raise ConfigError(f"destination {self.url} is a file, not a folder")
        if self._lists_by_find():
            try:
                yield from self._find_runs(conn, temps)
                return
            except findlist.Unusable:
                temps.clear()  # nothing was handed out: list over SFTP instead
        batch: list[tuple] = []
        for row in self._walk_rows(_Lister(self, conn.sftp, temps), b""):
            batch.append(row)
            if len(batch) >= ROW_BATCH:
                yield batch
                batch = []
        yield batch

    def _lists_by_find(self) -> bool:
        """find over ssh where the tree is large: starting a shell on the
        server costs more than a small tree's SFTP listing (~0.1 s here)."""
        way = self.options.extra.get("ssh_find", "auto")
        return way == "always" or (way == "auto" and self.options.expected_entries >= FIND_FROM)

    def _find_runs(self, conn: _Conn, temps: list[str]) -> Iterator[list[tuple]]:
        """the listing by one `find | sort` on the server (findlist.py), in
        runs of rows. findlist.Unusable, raised only before the first row,
        means the server will not run it: no shell (ForceCommand
        internal-sftp), no GNU find, a shell that prints its own lines."""
        what = f"cannot list {self.url}"
        root = self._find_root(conn, what)
        with self._op(what):
            try:
                chan = conn.transport.open_session(window_size=FIND_WINDOW)
            except paramiko.ChannelException as exc:
                raise findlist.Unusable(f"the server opens no session ({exc})") from None
        try:
            with self._op(what):
                try:
                    chan.exec_command(findlist.COMMAND)
                    chan.sendall(findlist.script(root))
                    chan.shutdown_write()
                except (paramiko.SSHException, EOFError, OSError) as exc:
                    if not conn.transport.is_active():
                        raise  # the connection, not the command: Transient
                    # refused, or closed before it read the script (an SFTP-only server)
                    raise findlist.Unusable(f"the server runs no commands ({exc})") from None
                chan.settimeout(FIND_POLL)
            parser = findlist.Parser(temps)
            said = findlist.Stderr()
            pipe = _Pipe(conn.sftp)
            try:
                while data := self._find_output(conn, chan, parser, said, root, what):
                    rows = parser.feed(data)
                    if rows:
                        self._read_targets(pipe, rows, what)
                        yield rows
                self._find_end(conn, chan, parser, said, what)
            except findlist.BadListing as exc:
                if not parser.rows:
                    raise findlist.Unusable(str(exc)) from None
                raise Permanent(f"{what}: {exc}; pass --ssh-find never to list over SFTP instead") from None
        finally:
            chan.close()

    def _find_root(self, conn: _Conn, what: str) -> bytes:
        """the root as an absolute path, as SFTP resolves it: find's shell may
        start elsewhere than sftp-server (internal-sftp -d)."""
        root = self._abs("")
        if root.startswith(b"/"):
            return root
        with self._op(what):
            t, msg = conn.sftp._request(CMD_REALPATH, root)
        if t != CMD_NAME or msg.get_int() != 1:
            raise findlist.Unusable("the server does not resolve the root")
        path = msg.get_binary()
        if not path.startswith(b"/"):
            raise findlist.Unusable("the server resolves the root to a relative path")
        return path

    def _find_output(self, conn: _Conn, chan: paramiko.Channel, parser: findlist.Parser,
                     said: findlist.Stderr, root: bytes, what: str) -> bytes:
        """the next piece of the listing, b"" at its end; stderr goes to said.
        Nothing comes while the server sorts (a large tree on a slow disk may
        take minutes): the connection is checked every IO_TIMEOUT instead.
        Once names flow, IO_TIMEOUT of silence is a lost connection."""
        quiet = since_check = 0.0
        while True:
            while chan.recv_stderr_ready():
                said.feed(chan.recv_stderr(1 << 16))
            with self._op(what):
                try:
                    return chan.recv(1 << 18)
                except socket.timeout:
                    pass
            quiet, since_check = quiet + FIND_POLL, since_check + FIND_POLL
            forked.alive()  # a forked lister is waiting, not stuck
            if not parser.started and quiet >= IO_TIMEOUT:
                raise findlist.Unusable("no answer")  # our script prints its head line at once
            if parser.last and quiet >= IO_TIMEOUT:
                raise Transient(f"{what}: the server stopped answering")
            if quiet >= FIND_PATIENCE:
                raise Transient(f"{what}: find on the server gave no answer in {FIND_PATIENCE / 60:.0f} min")
            if since_check >= IO_TIMEOUT:
                since_check = 0.0
                with self._op(what):
                    conn.sftp.stat(root)  # the server is there, only busy

    def _find_end(self, conn: _Conn, chan: paramiko.Channel, parser: findlist.Parser,
                  said: findlist.Stderr, what: str) -> None:
        """the listing is whole only with its end line, nothing on stderr
        after our head line, and a command that did not fail."""
        with self._op(what):
            chan.settimeout(IO_TIMEOUT)
            while more := chan.recv_stderr(1 << 16):
                said.feed(more)
            chan.status_event.wait(IO_TIMEOUT)
        if (parser.started and not parser.ended
                and (chan.exit_status == -1 or not conn.transport.is_active())):
            raise Transient(f"{what}: connection lost")  # cut before the server finished
        if not said.seen:
            raise findlist.BadListing("the server's shell did not run the listing as asked")
        if said.first_line:
            raise findlist.BadListing(f"the server said: {said.first_line}")
        if chan.exit_status not in (0, -1):  # -1: the server sends no exit status
            raise findlist.BadListing(f"the listing command failed (exit status {chan.exit_status})")
        parser.finish()

    def _read_targets(self, pipe: _Pipe, rows: list[tuple], what: str) -> None:
        """symlink targets, asked for together (READLINK), into their rows."""
        asked: dict[int, int] = {}
        for i, row in enumerate(rows):
            if row[1] == LINK:
                asked[pipe.request(CMD_READLINK, _sftp_str(self._abs(decode_path(row[0]))))] = i
        if not asked:
            return
        with self._op(what):
            pipe.flush()
            while asked:
                num, t, body = pipe.next()
                i = _expected(asked, num)
                if t == CMD_NAME:
                    rows[i] = (*rows[i][:8], decode_path(_first_name(body)), None)

    def _list_into(self, conn: _Conn, temps: list[str], out: queue.Queue, stop: threading.Event) -> None:
        """rows in batches onto out, then None; an error instead, where one happens."""
        def put(item) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            for batch in self._row_runs(conn, temps):
                if not put(batch):
                    return
            put(None)
        except BaseException as exc:
            put(exc)

    def _walk_rows(self, lister: "_Lister", key: bytes, depth: int = 0) -> Iterator[tuple]:
        if depth > MAX_DEPTH:
            # an endless tree (a broken or hostile server) ended in a RecursionError
            raise Permanent(f"cannot list {self.url}: it goes deeper than {MAX_DEPTH} folders at "
                            f"{decode_path(key)[:200]}...; a broken or hostile server? nothing was changed")
        with self._op(f"cannot list {decode_path(key) or self.url}"):
            rows = lister.take(key)
        for r in rows:
            if r[1] == DIR and lister.pending < LIST_PREFETCH:
                lister.want(r[0][:-1])
        for r in rows:
            yield r
            if r[1] == DIR:
                try:
                    yield from self._walk_rows(lister, r[0][:-1], depth + 1)
                except NotFound:
                    continue  # removed while we listed

    def _read_dir(self, rel: str) -> list[Entry]:
        """one directory's entries in sort_key order; temp names go to the caller."""
        with self._op(f"cannot list {rel or self.url}"):
            sftp = self._sftp()
            head = f"{rel}/" if rel else ""
            entries = [_raw_entry(head + decode_path(name), mode, size, mtime)
                       for name, mode, size, mtime in _readdir(sftp, self._abs(rel))]
            for e in entries:
                if e.kind == LINK and not is_temp_name(e.path.rsplit("/", 1)[-1]):
                    e.target = _readlink(sftp, self._abs(e.path))
        entries.sort(key=lambda e: sort_key(e.path, e.kind))
        return entries

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max(4, self.transfers), thread_name_prefix="sftp")
            return self._pool

    def stat(self, path: str) -> Entry | None:
        with self._op(f"cannot stat {path}"):
            sftp = self._sftp()
            try:
                attr = sftp.lstat(self._abs(path))
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    return None
                raise
            e = _entry(path, attr)
            if e.kind == LINK:
                e.target = _readlink(sftp, self._abs(path))
            return e

    # --- writing -----------------------------------------------------------

    def mkdir(self, path: str) -> None:
        with self._op(f"cannot create folder {path}"):
            self._mkdirs(self._sftp(), path)

    def _mkdirs(self, sftp: paramiko.SFTPClient, path: str) -> None:
        if not path:
            self._make_root(sftp)
            return
        try:
            sftp.mkdir(self._abs(path))
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                self._mkdirs(sftp, parent_of(path))
                return self._mkdirs_retry(sftp, path)
            if exc.errno is not None:
                raise
            # "Failure": most often it exists already
            attr = _lstat_or_none(sftp, self._abs(path))
            if attr is None or not st.S_ISDIR(attr.st_mode or 0):
                raise Permanent(f"cannot create folder {path}: a file is in the way") from None

    def _make_root(self, sftp: paramiko.SFTPClient) -> None:
        # the destination root is created on demand, like any other parent
        if self.root in ("", ".", "/") or _lstat_or_none(sftp, self._abs("")) is not None:
            return
        absolute = self.root.startswith("/")
        so_far = ""
        for part in [p for p in self.root.split("/") if p]:
            so_far = f"{so_far}/{part}" if so_far or absolute else part
            if _lstat_or_none(sftp, encode_path(so_far)) is None:
                sftp.mkdir(encode_path(so_far))

    def _mkdirs_retry(self, sftp: paramiko.SFTPClient, path: str) -> None:
        try:
            sftp.mkdir(self._abs(path))
        except OSError as exc:
            attr = _lstat_or_none(sftp, self._abs(path))
            if attr is None or not st.S_ISDIR(attr.st_mode or 0):
                raise exc

    def upload(self, local_path: str, path: str, entry: Entry, progress: Progress | None = None,
               resume: dict | None = None, checkpoint: Checkpoint | None = None) -> Entry:
        try:
            src = open(local_path, "rb")
        except OSError as exc:
            raise NotFound(f"local file {local_path} cannot be read: {exc.strerror}") from None
        with src:
            before = os.fstat(src.fileno())
            size = before.st_size
            with self._op(f"cannot write {path}", failure=Transient):
                state = self._resume_state(self._sftp(), path, resume, size)
                tmp_rel = state["tmp"] if state else self._temp_for(path)
                self._left_temps.add(tmp_rel)
                digest = self._send_file(src.fileno(), size, tmp_rel, progress, state, checkpoint)
            after = os.fstat(src.fileno())
        if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
            # never put a mix of two versions under the real name; the temp goes with the tidy-up
            raise SourceChanged(f"{path} changed while being uploaded; left for the next run")
        with self._op(f"cannot finish {path}"):
            sftp = self._sftp()
            tmp = self._abs(tmp_rel)
            got = sftp.lstat(tmp).st_size
            if got != size:
                raise Transient(f"cannot finish {path}: the server holds {got} of {size} bytes")
            if entry.mtime_ns is not None:
                secs = _wire_mtime(entry.mtime_ns)
                sftp.utime(tmp, (secs, secs))
            self._final_mode(sftp, tmp, entry)
            self._replace(sftp, tmp, self._abs(path))
            self._left_temps.discard(tmp_rel)
            result = _entry(path, sftp.lstat(self._abs(path)))
        if (before.st_size, before.st_mtime_ns) != (entry.size, entry.mtime_ns):
            digest = None  # what was sent is not the version the plan saw
        result.hash = entry.hash or digest
        return result

    def touch(self, path: str, entry: Entry) -> None:
        """the file's mtime only, one SETSTAT (base.Remote.touch). SETSTAT
        follows a symlink: the file and the folders above it are checked first."""
        if entry.mtime_ns is None:
            return
        with self._op(f"cannot touch {path}"):
            sftp = self._sftp()
            attr = _lstat_or_none(sftp, self._abs(path))
            if attr is None or not st.S_ISREG(attr.st_mode or 0) or attr.st_size != entry.size:
                raise NotFound(f"cannot touch {path}: not the file the plan saw")
            self._refuse_links_above(sftp, path)
            secs = _wire_mtime(entry.mtime_ns)
            sftp.utime(self._abs(path), (secs, secs))

    def _final_mode(self, sftp: paramiko.SFTPClient, tmp: bytes, entry: Entry) -> None:
        perms = bool(self.options.extra.get("perms"))
        try:
            sftp.chmod(tmp, final_mode(entry.mode, perms, UMASK))
        except OSError:
            if perms:
                raise  # else the file stays private (0600): a server without chmod

    def _send_file(self, fd: int, size: int, tmp_rel: str, progress: Progress | None,
                   state: dict | None, checkpoint: Checkpoint | None) -> bytes | None:
        """the xxh3 of what was sent, where it went in one stream from the start."""
        sftp = self._sftp()
        if state is None and size >= RANGE_MIN and self.transfers > 1:
            state = {"tmp": tmp_rel, "confirmed": 0, "ranges": _split(size, min(self.transfers, 4))}
        tmp = self._abs(tmp_rel)
        if state is not None and "ranges" in state:
            if state["confirmed"] == 0:
                self._open_temp(sftp, tmp_rel, truncate=True).close()
            return self._send_ranges(fd, tmp, state, progress, checkpoint)
        start = state["confirmed"] if state else 0
        f = self._open_temp(sftp, tmp_rel, truncate=start == 0)
        try:
            if start:
                f.truncate(start)

            def confirmed(n: int) -> None:
                if checkpoint:
                    checkpoint({"tmp": tmp_rel, "confirmed": n})

            hasher = None if start else xxhash.xxh3_128()
            self._send_range(self._conn(), f.handle, fd, start, size, progress, confirmed,
                             marks=size >= CHECKPOINT_EVERY, hasher=hasher)
        finally:
            f.close()
        return hasher.digest() if hasher else None

    def _resume_state(self, sftp: paramiko.SFTPClient, path: str, resume: dict | None,
                      size: int) -> dict | None:
        """the resume dict when its temp file (named in the journal) still holds
        what it claims, else None (and a stale temp file is removed)."""
        if not resume:
            return None
        tmp_rel = resume.get("tmp")
        if not is_temp_of(tmp_rel, path):
            if isinstance(tmp_rel, str) and is_safe_path(tmp_rel) and is_temp_name(_name(tmp_rel)):
                _remove_quietly(sftp, self._abs(tmp_rel))  # an older run's: the source changed since
            return None
        state = self._resumable(sftp, tmp_rel, resume, size)
        if state is None:
            _remove_quietly(sftp, self._abs(tmp_rel))  # the next try starts afresh under a new name
        return state

    def _resumable(self, sftp: paramiko.SFTPClient, tmp_rel: str, resume: dict, size: int) -> dict | None:
        attr = _lstat_or_none(sftp, self._abs(tmp_rel))
        if attr is None or not st.S_ISREG(attr.st_mode or 0):
            return None  # gone, or a symlink put in its place: never reopened
        have = attr.st_size or 0
        if "ranges" in resume:
            ranges = [list(r) for r in resume["ranges"]]
            furthest = max((pos for start, _, pos in ranges if pos > start), default=0)
            ok = furthest <= have and ranges and ranges[-1][1] == size
            return {"tmp": tmp_rel, "confirmed": resume.get("confirmed", 0), "ranges": ranges} if ok else None
        confirmed = int(resume.get("confirmed", 0))
        return {"tmp": tmp_rel, "confirmed": confirmed} if 0 < confirmed <= min(have, size) else None

    def _open_temp(self, sftp: paramiko.SFTPClient, tmp_rel: str, truncate: bool) -> paramiko.SFTPFile:
        """truncate: a new temp file, created exclusively with mode 0600; else
        the one a resumed upload checked (_resumable)"""
        open_ = _create_exclusive if truncate else partial(sftp.open, mode="r+")
        tmp = self._abs(tmp_rel)
        try:
            return open_(sftp, tmp) if truncate else open_(tmp)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
        self._mkdirs(sftp, parent_of(tmp_rel))
        return open_(sftp, tmp) if truncate else open_(tmp)

    def _send_range(self, conn: _Conn, handle: bytes, fd: int, pos: int, end: int,
                    progress: Progress | None, confirmed, marks: bool = True, hasher=None) -> None:
        """pipelined writes of fd[pos:end]; confirmed(n) after each ~16 MiB is
        acknowledged (and fsynced where the server can). Without marks (a file
        below the checkpoint size, sent again whole if cut) neither happens."""
        pipe = _Pipe(conn.sftp)
        pending: deque[tuple[int, int, bool]] = deque()  # (request, end offset, is fsync)
        try:
            self._write_range(pipe, conn, handle, fd, pos, end, pending, progress, confirmed, marks, hasher)
        except BaseException:
            if pending or not pipe.idle:
                self._discard(conn)  # replies still due: paramiko must not read them
            raise

    def _write_range(self, pipe: _Pipe, conn: _Conn, handle: bytes, fd: int, pos: int, end: int,
                     pending: deque, progress: Progress | None, confirmed, marks: bool, hasher) -> None:
        replies: dict[int, tuple[int, bytes]] = {}
        last_mark = pos
        while pos < end or pending:
            while pos < end and len(pending) * conn.write_chunk < MAX_INFLIGHT_BYTES:
                num, n = pipe.write_from(handle, fd, pos, min(conn.write_chunk, end - pos), hasher)
                pos += n
                pending.append((num, pos, False))
                if progress:
                    progress(n)
                if marks and (pos - last_mark >= CHECKPOINT_EVERY or pos == end):
                    last_mark = pos
                    # without fsync the write acks before the mark still confirm the data
                    num = -1 if conn.no_fsync else pipe.request(CMD_EXTENDED, _FSYNC_EXT, _sftp_str(handle))
                    pending.append((num, pos, True))
            pipe.flush()
            num, upto, is_fsync = pending[0]
            err = _status_error(conn.sftp, *pipe.reply(num, replies, pending)) if num >= 0 else None
            pending.popleft()
            if err is not None and not is_fsync:
                raise err
            if is_fsync:
                if isinstance(err, OSError) and err.errno is None:
                    conn.no_fsync = True
                confirmed(upto)

    def _send_ranges(self, fd: int, tmp: bytes, state: dict, progress: Progress | None,
                     checkpoint: Checkpoint | None) -> bytes | None:
        """concurrent range writers, each over its own connection; the caller's
        thread reports progress and checkpoints, and hashes the file meanwhile
        (reads and xxh3 free the GIL). The file's xxh3, or None if it shrank."""
        ranges: list[list[int]] = state["ranges"]  # [start, end, confirmed up to]
        lock = threading.Lock()
        sent = [0]

        def count(n: int) -> None:
            with lock:
                sent[0] += n

        def run(r: list[int], conn: _Conn | None) -> None:
            def confirmed(n: int) -> None:
                with lock:
                    r[2] = n
            with self._op("cannot write range", failure=Transient):
                conn = conn or self._conn()
                f = conn.sftp.open(tmp, "r+")
                try:
                    self._send_range(conn, f.handle, fd, r[2], r[1], count, confirmed)
                finally:
                    f.close()

        # the first range goes over this thread's connection, idle meanwhile: one connection less
        mine = self._conn()
        futures = [self._executor().submit(run, r, mine if k == 0 else None)
                   for k, r in enumerate(r for r in ranges if r[2] < r[1])]
        reported, marked = 0, sum(r[2] - r[0] for r in ranges)
        hasher = FileHasher(fd, ranges[-1][1])
        while futures:
            if hasher.finished:
                done, _ = wait(futures, timeout=0.2, return_when=FIRST_EXCEPTION)
            else:
                until = time.monotonic() + 0.2
                while not hasher.finished and time.monotonic() < until:
                    hasher.step()
                done = {f for f in futures if f.done()}
            with lock:
                delta, reported = sent[0] - reported, sent[0]
                total = sum(r[2] - r[0] for r in ranges)
                snapshot = [list(r) for r in ranges]
            if progress and delta:
                progress(delta)
            if checkpoint and (total - marked >= CHECKPOINT_EVERY or len(done) == len(futures)):
                marked = total
                checkpoint({"tmp": state["tmp"], "confirmed": total, "ranges": snapshot})
            failed = [f for f in done if f.exception() is not None]
            if failed:
                wait(futures)  # let the other writers stop before we report
                if checkpoint:
                    with lock:
                        snapshot = [list(r) for r in ranges]
                    checkpoint({"tmp": state["tmp"], "confirmed": sum(r[2] - r[0] for r in snapshot),
                                "ranges": snapshot})
                raise failed[0].exception()
            if len(done) == len(futures):
                break
        return hasher.digest()

    def _replace(self, sftp: paramiko.SFTPClient, src: bytes, dst: bytes) -> None:
        """atomic overwrite; plain rename after a remove where posix-rename is missing."""
        try:
            sftp.posix_rename(src, dst)
            return
        except OSError as exc:
            if exc.errno is not None or "unsupported" not in str(exc).lower():
                raise
        _remove_quietly(sftp, dst)
        sftp.rename(src, dst)

    # --- many small files ----------------------------------------------------

    batch_max_size = SMALL_FILE  # the executor sends files up to this size through upload_many

    def upload_many(self, items: Iterable[SmallUpload], done: Callable[[SmallUpload, ReconcileError | None], None],
                    progress: Progress | None = None) -> None:
        """whole small files over this thread's connection, pipelined: open,
        writes, fsetstat and close go out together for many files, and each
        file is renamed into place only once all of its requests are acked, so
        no partial file ever has its real name. No remote fsync and no
        checkpoint: a file cut off is sent again whole. done(item, error) once
        per item, in any order. A lost connection raises Transient and leaves
        the unreported items to the caller. Anything unusual (a missing folder,
        a refused write or rename) goes through upload() instead."""
        slow: list[_Small] = []
        try:
            with self._op(f"cannot write to {self.url}", failure=Transient):
                conn = self._conn()
                self._root_once(conn.sftp)
                self._pipeline(conn, iter(items), done, progress, slow)
        except BaseException:
            self._drop()  # requests may still be in flight on it
            raise
        for f in slow:
            self._finish_slow(f, done, progress)

    def _pipeline(self, conn: _Conn, items: Iterator[SmallUpload], done, progress: Progress | None,
                  slow: list[_Small]) -> None:
        pipe = _Pipe(conn.sftp)
        waiting: dict[int, tuple[_Small | None, int]] = {}  # request -> (file, stage)
        made: set[str] = set()  # folders created for this batch
        files = held = 0
        more = True
        while True:
            while more and files < BATCH_FILES and held < MAX_INFLIGHT_BYTES:
                item = next(items, None)
                if item is None:
                    more = False
                    break
                f = self._read_small(item, done)
                if f is not None:
                    files, held = files + 1, held + f.size
                    self._ask_parent(pipe, waiting, f)
                    waiting[pipe.request(CMD_OPEN, _sftp_str(f.tmp), _OPEN_ARGS)] = (f, 0)
            if not pipe.ready():
                pipe.flush()  # only before waiting: fewer, fuller packets both ways
            if not waiting:
                if not pipe.idle:
                    self._drop()  # stray bytes: paramiko must not read them
                return
            num, t, body = pipe.next()
            f, stage = _expected(waiting, num)
            if f is None:  # a folder made ahead; a failure shows in its files' opens
                continue
            if stage == 0:  # opened
                if t == CMD_HANDLE:
                    self._send_small(pipe, waiting, conn, f, _handle(body))
                    continue
                if _status(t, body) == FX_NO_SUCH_FILE and not f.reopened and self._mkdir_chain(pipe, waiting, f, made):
                    f.reopened = True
                    waiting[pipe.request(CMD_OPEN, _sftp_str(f.tmp), _OPEN_ARGS)] = (f, 0)
                    continue
            elif stage == 1:  # a write, the fsetstat or the close
                f.ok = f.ok and _status(t, body) == FX_OK
                f.pending -= 1
                if f.pending:
                    continue
                if f.ok:
                    f.sent = True
                    if progress:
                        progress(f.size)
                    if not conn.no_posix_rename:
                        waiting[pipe.request(CMD_EXTENDED, _RENAME_EXT, _sftp_str(f.tmp), _sftp_str(f.dst))] = (f, 2)
                        continue
            else:  # renamed
                code = _status(t, body)
                if code == FX_OK:
                    self._left_temps.discard(f.tmp_rel)
                    files, held = files - 1, held - f.size
                    f.item.hash = xxhash.xxh3_128_digest(f.data)
                    done(f.item, None)
                    continue
                conn.no_posix_rename = code == FX_OP_UNSUPPORTED
            files, held = files - 1, held - f.size
            f.data = b""
            slow.append(f)

    def _root_once(self, sftp: paramiko.SFTPClient) -> None:
        """a missing root would send every file of a first sync down the slow
        path; one thread makes it while the others wait (their mkdirs of the
        same folder would fail and be retried)."""
        with self._root_lock:
            if not self._root_ready:
                self._make_root(sftp)
                self._root_ready = True

    def _ask_parent(self, pipe: _Pipe, waiting: dict, f: _Small) -> None:
        """a folder not yet seen this run is made ahead of the first open in it
        (it fails harmlessly when it exists), so its files do not all fail once."""
        parent = parent_of(f.item.path)
        if parent and parent not in self._dirs_seen:
            self._dirs_seen.add(parent)
            waiting[pipe.request(CMD_MKDIR, _sftp_str(self._abs(parent)), _NO_ATTRS)] = (None, 0)

    def _mkdir_chain(self, pipe: _Pipe, waiting: dict, f: _Small, made: set[str]) -> bool:
        """after an open found no folder: each folder above the file, top down,
        ahead of a second open (existing ones fail harmlessly). False when there
        is nothing to make: upload() then deals with the file."""
        parts = f.item.path.split("/")[:-1]
        chain = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
        for d in chain:
            if d not in made:
                made.add(d)
                waiting[pipe.request(CMD_MKDIR, _sftp_str(self._abs(d)), _NO_ATTRS)] = (None, 0)
        return bool(chain)

    def _read_small(self, item: SmallUpload, done) -> _Small | None:
        """the whole local file, read once; None (after done) when it cannot be sent."""
        e = item.entry
        try:
            fd = os.open(item.local_path, os.O_RDONLY)
        except OSError as exc:
            done(item, NotFound(f"local file {item.local_path} cannot be read: {exc.strerror}"))
            return None
        try:
            before = os.fstat(fd)
            # the plan's size first: a file that grew since is never read whole into memory
            data = os.pread(fd, before.st_size, 0) if before.st_size and before.st_size == e.size else b""
            after = os.fstat(fd)
        except OSError as exc:
            done(item, Permanent(f"cannot read the local file {item.local_path}: {exc.strerror}"))
            return None
        finally:
            os.close(fd)
        if (len(data), after.st_size, after.st_mtime_ns) != (before.st_size, before.st_size, before.st_mtime_ns) \
                or (e.size, e.mtime_ns) != (before.st_size, before.st_mtime_ns):
            done(item, SourceChanged(f"{item.path} changed while being uploaded; left for the next run"))
            return None
        tmp_rel = self._temp_for(item.path)
        self._left_temps.add(tmp_rel)
        return _Small(item, data, len(data), tmp_rel, self._abs(tmp_rel), self._abs(item.path), self._small_attrs(e))

    def _small_attrs(self, e: Entry) -> bytes:
        """SFTP v3 attributes: permissions, then atime and mtime."""
        mode = final_mode(e.mode, bool(self.options.extra.get("perms")), UMASK)
        flags, body = ATTR_PERMS, struct.pack(">I", mode)
        if e.mtime_ns is not None:
            secs = _wire_mtime(e.mtime_ns)
            flags, body = flags | ATTR_TIMES, body + struct.pack(">II", secs, secs)
        return struct.pack(">I", flags) + body

    def _send_small(self, pipe: _Pipe, waiting: dict, conn: _Conn, f: _Small, handle: bytes) -> None:
        h = _sftp_str(handle)
        view, step = memoryview(f.data), conn.write_chunk
        nums = []
        for pos in range(0, f.size, step):
            piece = view[pos:pos + step]
            nums.append(pipe.request(CMD_WRITE, h, struct.pack(">QI", pos, len(piece)), piece))
        nums.append(pipe.request(CMD_FSETSTAT, h, f.attrs))
        nums.append(pipe.request(CMD_CLOSE, h))  # same handle: served after the writes
        f.pending = len(nums)
        for num in nums:
            waiting[num] = (f, 1)

    def _finish_slow(self, f: _Small, done, progress: Progress | None) -> None:
        """a file the pipeline could not finish: rename what it sent, or send it again."""
        item = f.item
        try:
            if f.sent:
                with self._op(f"cannot finish {item.path}"):
                    self._replace(self._sftp(), f.tmp, f.dst)
                self._left_temps.discard(f.tmp_rel)
            else:
                self.upload(item.local_path, item.path, item.entry, progress)
        except Transient:
            raise
        except ReconcileError as exc:
            done(item, exc)
            return
        done(item, None)

    def symlink(self, target: str, path: str) -> None:
        tmp_rel = self._temp_for(path)
        with self._op(f"cannot link {path}"):
            sftp = self._sftp()
            tmp = self._abs(tmp_rel)
            _remove_quietly(sftp, tmp)
            try:
                sftp.symlink(encode_path(target), tmp)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
                self._mkdirs(sftp, parent_of(path))
                sftp.symlink(encode_path(target), tmp)
            self._replace(sftp, tmp, self._abs(path))

    def move(self, src: str, dst: str) -> None:
        with self._op(f"cannot move {src} to {dst}"):
            sftp = self._sftp()
            a, b = self._abs(src), self._abs(dst)
            attr = _lstat_or_none(sftp, a)
            if attr is None:
                raise NotFound(f"cannot move {src}: it does not exist")
            if st.S_ISDIR(attr.st_mode or 0) and _lstat_or_none(sftp, b) is not None:
                # a directory move never merges into an existing directory.
                raise Permanent(f"cannot move folder {src} to {dst}: target exists")
            self._refuse_links_above(sftp, dst)
            try:
                self._replace(sftp, a, b)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
                self._mkdirs(sftp, parent_of(dst))
                self._replace(sftp, a, b)

    def _refuse_links_above(self, sftp: paramiko.SFTPClient, path: str) -> None:
        """the server renames through a symlinked folder (the trash swapped for
        a link, say): check each folder above path first. SFTP has no openat,
        so a swap right after this check stays possible; a planted link does not."""
        parts = path.split("/")[:-1]
        for k in range(1, len(parts) + 1):
            attr = _lstat_or_none(sftp, self._abs("/".join(parts[:k])))
            if attr is None:
                return  # made below by _mkdirs, which never follows a link
            if st.S_ISLNK(attr.st_mode or 0):
                raise Permanent(f"cannot move to {path}: {'/'.join(parts[:k])} on the server is a symlink; "
                                "reconcile never writes through one")

    def delete(self, path: str) -> None:
        with self._op(f"cannot delete {path}"):
            sftp = self._sftp()
            try:
                sftp.remove(self._abs(path))
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    return
                attr = _lstat_or_none(sftp, self._abs(path))
                if attr is not None and st.S_ISDIR(attr.st_mode or 0):
                    raise Permanent(f"cannot delete {path}: it is a folder") from None
                raise

    def rmdir(self, path: str) -> None:
        with self._op(f"cannot remove folder {path}"):
            try:
                self._sftp().rmdir(self._abs(path))
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise

    # --- reading -----------------------------------------------------------

    def download(self, path: str, local_path: str | BinaryIO, progress: Progress | None = None,
                 offset: int = 0, limit: int | None = None) -> Entry:
        try:
            output = local_output(local_path, offset)
        except OSError as exc:
            raise NotFound(f"cannot write local file {local_path}: {exc.strerror}") from None
        with output as out, self._op(f"cannot read {path}", failure=Transient):
            sftp = self._sftp()
            with sftp.open(self._abs(path), "rb") as f:
                size = f.stat().st_size or 0
                if limit is not None and size > limit:
                    # a server's fstat is not trusted to make us read more than the listing said
                    raise SourceChanged(f"{path} is {size} bytes on the server, not the {limit} listed")
                out.truncate(offset)
                out.seek(offset)
                self._fetch_range(self._conn(), f.handle, out, offset, size, progress)
        e = self.stat(path)
        if e is None:
            raise NotFound(f"{path} vanished during download")
        return e

    def _fetch_range(self, conn: _Conn, handle: bytes, out, pos: int, end: int,
                     progress: Progress | None) -> None:
        """pipelined reads of [pos, end) written to out in order; a short read
        is followed up before going on."""
        sftp = conn.sftp
        acks = _Acks(sftp)
        pending: deque[tuple[int, int, int]] = deque()  # (request, offset, length)
        sent = pos
        while sent < end or pending:
            while sent < end and len(pending) * conn.read_chunk < MAX_INFLIGHT_BYTES:
                n = min(conn.read_chunk, end - sent)
                pending.append((sftp._async_request(acks, CMD_READ, handle, int64(sent), n), sent, n))
                sent += n
            num, offset, n = pending.popleft()
            data = acks.wait(num)
            if isinstance(data, EOFError):
                raise SourceChanged("the remote file shrank while it was read")
            if isinstance(data, BaseException):
                raise data
            if len(data) > n:
                raise Permanent(f"the server sent {len(data)} bytes for a read of {n}")
            _local_write(out, data, out.name)
            if progress:
                progress(len(data))
            if len(data) < n:
                # a short read: drain the queue, then carry on from here
                for later, _, _ in pending:
                    acks.wait(later)
                pending.clear()
                sent = offset + len(data)
                out.seek(sent)

    # --- cleanup -----------------------------------------------------------

    def remove_temp_files(self, keep: frozenset[str] = frozenset()) -> int:
        temps = self._seen_temps if self._seen_temps is not None else self._find_temps("")
        count = 0
        for rel in dict.fromkeys([*temps, *self._left_temps]):
            if rel in keep or _name(rel) in keep:
                continue
            with self._op(f"cannot remove {rel}"):
                if self._remove_tree(self._sftp(), rel):
                    count += 1
        self._seen_temps = None
        self._left_temps.clear()
        return count

    def _find_temps(self, rel: str) -> list[str]:
        found = []
        for e in self._read_dir(rel):
            if is_temp_name(_name(e.path)):
                found.append(e.path)
            elif e.kind == DIR:
                found += self._find_temps(e.path)
        return found

    def _remove_tree(self, sftp: paramiko.SFTPClient, rel: str) -> bool:
        """true when something was there to remove."""
        attr = _lstat_or_none(sftp, self._abs(rel))
        if attr is None:
            return False
        if st.S_ISDIR(attr.st_mode or 0):
            for name, *_ in _readdir(sftp, self._abs(rel)):
                self._remove_tree(sftp, f"{rel}/{decode_path(name)}")
            sftp.rmdir(self._abs(rel))
        else:
            _remove_quietly(sftp, self._abs(rel))
        return True

    def close(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns), set()
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        for conn in conns:
            conn.close()
        self._local = threading.local()


# --- helpers on one SFTPClient ----------------------------------------------

def _readdir(sftp: paramiko.SFTPClient, path: bytes) -> list[tuple[bytes, int, int, int | None]]:
    """(name, mode, size, mtime) of each entry, names kept as bytes (paramiko's
    own listdir decodes them as utf-8 and fails on anything else); the
    attributes are read with struct, not paramiko's per-field decoder."""
    t, msg = sftp._request(CMD_OPENDIR, path)
    if t != CMD_HANDLE:
        raise paramiko.sftp.SFTPError("expected a handle")
    handle = msg.get_binary()
    out: list[tuple[bytes, int, int, int | None]] = []
    try:
        while True:
            try:
                t, msg = sftp._request(CMD_READDIR, handle)
            except EOFError:
                break
            if t != CMD_NAME:
                raise paramiko.sftp.SFTPError("expected names")
            _parse_names(msg.get_remainder(), out)
    finally:
        sftp._request(CMD_CLOSE, handle)
    return out


_ALL_ATTRS = 0x0F  # size, uid+gid, permissions, times: what OpenSSH sends
_U32, _ATTRS = struct.Struct(">I"), struct.Struct(">QIIIII")


def _parse_names(data: bytes, out: list) -> None:
    """the entries of an SSH_FXP_NAME body (after the request id)."""
    u32 = _U32.unpack_from
    (count,), pos = u32(data, 0), 4
    try:
        for _ in range(count):
            (n,) = u32(data, pos)
            name = data[pos + 4:pos + 4 + n]
            (n,) = u32(data, pos + 4 + n)  # longname, unused
            pos += 8 + len(name) + n
            (flags,) = u32(data, pos)
            if flags == _ALL_ATTRS:
                size, _uid, _gid, mode, _atime, mtime = _ATTRS.unpack_from(data, pos + 4)
                pos += 32
            else:
                size, mode, mtime, pos = _odd_attrs(data, pos)
            if name != b"." and name != b"..":
                out.append((name, mode, size, mtime))
    except struct.error:
        raise paramiko.sftp.SFTPError("a listing reply was cut short") from None


def _odd_attrs(data: bytes, pos: int) -> tuple[int, int, int | None, int]:
    """(size, mode, mtime, next position) for attributes with any flag set."""
    u32 = _U32.unpack_from
    (flags,), pos = u32(data, pos), pos + 4
    size = mode = 0
    mtime = None
    if flags & 0x01:
        (size,), pos = struct.unpack_from(">Q", data, pos), pos + 8
    if flags & 0x02:
        pos += 8
    if flags & 0x04:
        (mode,), pos = u32(data, pos), pos + 4
    if flags & 0x08:
        (mtime,), pos = u32(data, pos + 4), pos + 8
    if flags & 0x80000000:
        (count,), pos = u32(data, pos), pos + 4
        for _ in range(2 * count):  # name, value
            (n,) = u32(data, pos)
            pos += 4 + n
    return size, mode, mtime, pos


def _chunk_limits(sftp: paramiko.SFTPClient) -> tuple[int, int]:
    """(write, read) request sizes: 32 KiB unless the server names its limits."""
    try:
        t, msg = sftp._request(CMD_EXTENDED, "limits@openssh.com")
    except OSError:
        return SAFE_CHUNK, SAFE_CHUNK  # not offered
    if t != CMD_EXTENDED_REPLY:
        return SAFE_CHUNK, SAFE_CHUNK
    _packet, read, write = msg.get_int64(), msg.get_int64(), msg.get_int64()
    return (min(write, MAX_CHUNK) if write >= SAFE_CHUNK else SAFE_CHUNK,
            min(read, MAX_CHUNK) if read >= SAFE_CHUNK else SAFE_CHUNK)


def _readlink(sftp: paramiko.SFTPClient, path: bytes) -> str | None:
    try:
        target = sftp.readlink(path)
    except OSError:
        return None
    return decode_path(target) if isinstance(target, bytes) else target


def _create_exclusive(sftp: paramiko.SFTPClient, path: bytes) -> paramiko.SFTPFile:
    """open(O_CREAT|O_EXCL) with mode 0600 from the start: a name someone
    planted (a symlink included) fails instead of being written through"""
    attrs = SFTPAttributes()
    attrs.st_mode = TEMP_MODE
    t, msg = sftp._request(CMD_OPEN, path, OPEN_WRITE, attrs)
    if t != CMD_HANDLE:
        raise paramiko.sftp.SFTPError("expected a handle")
    return paramiko.SFTPFile(sftp, msg.get_binary(), "w", -1)


def _wire_mtime(ns: int) -> int:
    """an mtime as SFTP v3 carries it: whole seconds in a uint32"""
    return min(max(ns // 1_000_000_000, 0), MAX_MTIME)


def _lstat_or_none(sftp: paramiko.SFTPClient, path: bytes) -> SFTPAttributes | None:
    try:
        return sftp.lstat(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise


def _remove_quietly(sftp: paramiko.SFTPClient, path: bytes) -> None:
    try:
        sftp.remove(path)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, None, errno.EACCES):
            raise


def _entry(path: str, attr: SFTPAttributes) -> Entry:
    mode = attr.st_mode or 0
    kind = DIR if st.S_ISDIR(mode) else LINK if st.S_ISLNK(mode) else FILE
    mtime = attr.st_mtime
    return Entry(path, kind, (attr.st_size or 0) if kind == FILE else 0,
                 None if mtime is None else int(mtime) * 1_000_000_000, 0, 0, mode)


def _raw_entry(path: str, mode: int, size: int, mtime: int | None) -> Entry:
    kind = DIR if st.S_ISDIR(mode) else LINK if st.S_ISLNK(mode) else FILE
    return Entry(path, kind, size if kind == FILE else 0,
                 None if mtime is None else mtime * 1_000_000_000, 0, 0, mode)


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _short(name: str) -> str:
    return decode_path(encode_path(name)[:100])


def is_temp_of(tmp: object, path: str) -> bool:
    """tmp is a temp name _temp_for could have given path (in its folder):
    a journal's resume record is checked, never trusted as a path"""
    if not isinstance(tmp, str) or parent_of(tmp) != parent_of(path):
        return False
    pattern = re.escape(TEMP_MARK) + r"[0-9a-f]{16}-" + re.escape(_short(_name(path)))
    return re.fullmatch(pattern, _name(tmp)) is not None


def _split(size: int, n: int) -> list[list[int]]:
    """n ranges on MiB boundaries as [start, end, confirmed up to]."""
    step = -(-size // n // (1 << 20)) * (1 << 20)
    starts = list(range(0, size, step))
    return [[s, min(s + step, size), s] for s in starts]


def _preadv(fd: int, into: memoryview, pos: int) -> int:
    try:
        n = os.preadv(fd, [into], pos)
    except OSError as exc:
        raise Permanent(f"cannot read the local file: {exc.strerror}") from None
    if not n:
        raise SourceChanged("the local file shrank while it was sent")
    return n


def _status_error(sftp: paramiko.SFTPClient, t: int, body: bytes) -> BaseException | None:
    """None for an OK status; else the error paramiko would raise for it."""
    code = _status(t, body)
    if code == FX_OK:
        return None
    if code < 0:
        return paramiko.sftp.SFTPError("unexpected reply")
    try:
        sftp._convert_status(paramiko.Message(body))
    except BaseException as exc:
        return exc
    return None


def _local_write(out, chunk: bytes, local_path: str) -> None:
    try:
        out.write(chunk)
    except OSError as exc:
        raise Permanent(f"cannot write local file {local_path}: {exc.strerror}") from None


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
