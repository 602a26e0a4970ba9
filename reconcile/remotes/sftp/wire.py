"""The SFTP wire code that reaches into paramiko's private API: requests
pipelined and replies parsed straight off the channel (_Pipe, _Acks), raw
requests through SFTPClient._request and _async_request, and the reply
parsing. Nothing else in this package calls paramiko's private SFTP methods;
ssh_send.py does the same for its packetizer."""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass
from functools import partial

from reconcile import portable
from reconcile.errors import Permanent, SourceChanged
from reconcile.remotes.sftp import ssh_send
from reconcile.remotes.sftp.loader import paramiko
from paramiko.sftp import (CMD_ATTRS, CMD_LSTAT, CMD_CLOSE, CMD_MKDIR, CMD_DATA, CMD_EXTENDED, CMD_EXTENDED_REPLY, CMD_HANDLE, CMD_NAME,
                           CMD_OPEN, CMD_OPENDIR, CMD_READ, CMD_READDIR, CMD_REALPATH, CMD_STATUS, CMD_WRITE, int64)
from paramiko.sftp_attr import SFTPAttributes

SAFE_CHUNK = 1 << 15  # every SFTP server takes 32 KiB reads and writes
MAX_CHUNK = 255 << 10  # larger requests where the server says it takes them (limits@openssh.com)
SEND_PIECE = 1 << 15  # bytes per channel send when flushing batched requests
FLUSH_AT = 1 << 16  # queued request bytes sent even while replies keep coming
MAX_REPLY = 1 << 24  # a longer reply length is garbage
FX_OK, FX_NO_SUCH_FILE, FX_PERMISSION_DENIED, FX_OP_UNSUPPORTED = 0, 2, 3, 8
# SSH_FXF_WRITE | CREAT | TRUNC | EXCL: a temp file is always new, so a symlink
# or file planted at its name makes the open fail instead of being written through
OPEN_WRITE = 0x02 | 0x08 | 0x10 | 0x20
TEMP_MODE = 0o600  # what a temp file holds is private until it has its final mode
ATTR_PERMS, ATTR_TIMES = 0x04, 0x08


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


_REPLY_HEAD = struct.Struct(">IBI")  # length, type, request number
_RENAME_EXT = struct.pack(">I", 24) + b"posix-rename@openssh.com"
_OPEN_ARGS = struct.pack(">III", OPEN_WRITE, ATTR_PERMS, TEMP_MODE)  # pflags, attributes
_NO_ATTRS = struct.pack(">I", 0)
_FSYNC_EXT = struct.pack(">I", 17) + b"fsync@openssh.com"
_LIMITS_EXT = struct.pack(">I", 18) + b"limits@openssh.com"


class _Pipe:
    """raw SFTP requests queued and sent together (one channel write for many
    small requests), and their replies parsed straight off the channel. While
    a pipe has requests out, nothing else may use its connection."""

    def __init__(self, sftp: paramiko.SFTPClient) -> None:
        self.sftp = sftp
        sftp.owed = False  # its reads meet what a probe left unanswered first (settle)
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

    def _number(self, count: int = 1) -> int:
        """the first of count request numbers in a row"""
        sftp = self.sftp
        with sftp._lock:  # numbers shared with paramiko's own requests
            num = sftp.request_number
            sftp.request_number = num + count
        return num

    def reserve(self, count: int) -> int:
        """the first of count request numbers in a row, for requests the
        caller builds whole and hands to queue()"""
        return self._number(count)

    def queue(self, *parts: bytes | memoryview) -> None:
        """requests built whole by the caller, sent with the next flush"""
        if self.queued >= FLUSH_AT:
            self.flush()
        self.out.extend(parts)
        self.queued += sum(map(len, parts))

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
        """(request number, type, body) of the next reply to a request of
        this pipe's; one paramiko sent without waiting (_Limits) goes to its owner."""
        while True:
            buf, pos = self.buf, self.pos
            if len(buf) - pos >= 9:
                n, t, num = _REPLY_HEAD.unpack_from(buf, pos)
                if n > MAX_REPLY or n < 5:
                    raise paramiko.sftp.SFTPError("garbage reply")
                end = pos + 4 + n
                if end <= len(buf):
                    self.pos = end
                    body = buf[pos + 9:end]
                    # paramiko waits for nothing (the usual case): the reply is ours
                    if not self.sftp._expecting or not self._to_owner(num, t, body):
                        return num, t, body
                    continue
            elif len(buf) - pos >= 4:
                self._whole()  # raises on a garbage length
            if self.out and not self.chan.recv_ready():
                self.flush()  # what is queued goes out before a wait (a reply read ahead was not ours)
            data = self.chan.recv(1 << 16)
            if not data:
                raise EOFError("the channel closed")
            self.buf, self.pos = self.buf[self.pos:] + data, 0

    def _to_owner(self, num: int, t: int, body: bytes) -> bool:
        """a reply paramiko's own request is waiting for, handed to its owner."""
        with self.sftp._lock:
            owner = self.sftp._expecting.get(num)
            if not isinstance(owner, (_Limits, _Stray)):
                return False
            del self.sftp._expecting[num]
        owner._async_response(t, paramiko.Message(body), num)
        return True

    def buffered(self) -> bool:
        """bytes read off the channel and not yet parsed (a reply, or part of one)."""
        return self.pos < len(self.buf)

    def leave(self, nums) -> None:
        """requests whose replies nobody needs (a listing's last CLOSEs): sent
        now, and dropped by whichever reader meets them, this pipe's, another
        pipe's or paramiko's, so the session can serve before they come back.
        Only with nothing buffered here (buffered() is False)."""
        self.flush()
        with self.sftp._lock:
            for num in nums:
                self.sftp._expecting[num] = _STRAY

    @property
    def idle(self) -> bool:
        """nothing left unread: the connection can serve plain calls again."""
        return self.pos == len(self.buf) and not self.chan.recv_ready()


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


class _Replies:
    """replies to requests sent together, kept by number (paramiko's own
    _request waits for each reply before the next request goes out)."""

    def __init__(self, sftp: paramiko.SFTPClient) -> None:
        self.sftp = sftp
        self.got: dict[int, tuple[int, paramiko.Message]] = {}
        self.asked: dict[bytes, int] = {}  # lstats sent with INIT: path -> number (session.py)

    def ask(self, t: int, *args) -> int:
        return self.sftp._async_request(self, t, *args)

    def _async_response(self, t: int, msg: paramiko.Message, num: int) -> None:
        self.got[num] = (t, msg)

    def wait(self, num: int) -> tuple[int, paramiko.Message]:
        while num not in self.got:
            self.sftp._read_response()
        return self.got.pop(num)


def _attrs(body: bytes) -> SFTPAttributes:
    """the attributes in an ATTRS reply's body."""
    return SFTPAttributes._from_msg(paramiko.Message(body))


def _lstats(sftp: paramiko.SFTPClient, paths: list[bytes]) -> list[SFTPAttributes | None]:
    """the lstat of each path, all asked at once (one round trip); None where
    missing. Those asked together with the session's INIT are not asked again."""
    early: _Replies | None = getattr(sftp, "init_replies", None)
    if early is not None and all(p in early.asked for p in paths):
        replies, nums = early, [early.asked.pop(p) for p in paths]
    else:
        replies = _Replies(sftp)
        nums = [replies.ask(CMD_LSTAT, p) for p in paths]
    out: list[SFTPAttributes | None] = []
    for num in nums:
        t, msg = replies.wait(num)
        if t == CMD_ATTRS:
            out.append(SFTPAttributes._from_msg(msg))
            continue
        if t != CMD_STATUS:
            raise paramiko.sftp.SFTPError(f"an lstat answered with message type {t}")
        try:
            sftp._convert_status(msg)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
        out.append(None)
    return out


def _ok(t: int, msg: paramiko.Message) -> bool:
    """a STATUS reply saying OK (read off msg)."""
    return t == CMD_STATUS and msg.get_int() == FX_OK


def _mkdirs_then_lstat(sftp: paramiko.SFTPClient, folders: list[bytes], last: bytes) -> SFTPAttributes | None:
    """each folder made, top down, and then last's lstat, all asked at once
    (one round trip): a folder that exists fails harmlessly. The lstat of last
    (None where missing) says whether it worked; a server that takes requests
    out of order may answer None, and the caller then goes one at a time."""
    replies = _Replies(sftp)
    no_attrs = SFTPAttributes()
    nums = [replies.ask(CMD_MKDIR, p, no_attrs) for p in folders]
    stat_num = replies.ask(CMD_LSTAT, last)
    for num in nums:
        replies.wait(num)  # made or there already: the lstat tells
    t, msg = replies.wait(stat_num)
    return SFTPAttributes._from_msg(msg) if t == CMD_ATTRS else None


def _realpath(sftp: paramiko.SFTPClient, path: bytes) -> tuple[int, paramiko.Message]:
    """(reply type, message) of a REALPATH, the name left as bytes."""
    return sftp._request(CMD_REALPATH, path)


def _ask_read(sftp: paramiko.SFTPClient, acks: _Acks, handle: bytes, offset: int, n: int) -> int:
    """one READ sent without waiting: its reply goes to acks under the number returned."""
    return sftp._async_request(acks, CMD_READ, handle, int64(offset), n)


class _Stray:
    """the owner of replies nobody waits for: dropped when read."""

    def _async_response(self, t: int, msg: paramiko.Message, num: int) -> None:
        pass


_STRAY = _Stray()  # kept alive here: paramiko holds its owners weakly
_UNDONE = _Stray()  # a probe's removes: dropped when read, but read before the session closes (settle)
SETTLE_WAIT = 5.0  # seconds: the most a closing session waits for them


def settle(sftp: paramiko.SFTPClient) -> None:
    """before a session closes: the answers to requests that must be done
    (_UNDONE's: a probe's removes) read, where no reader met them yet.
    sftp-server stops at the end of its input, and requests still queued
    there would be dropped undone. Not after a _Pipe was made on the session:
    it meets them before its own answers, and may hold bytes read in part."""
    if not getattr(sftp, "owed", False):
        return
    sftp.owed = False
    try:
        sftp.get_channel().settimeout(SETTLE_WAIT)
        while any(owner is _UNDONE for owner in list(sftp._expecting.values())):
            sftp._read_response()
    except Exception:
        pass  # left for the tidy-up: their names are temp names


class _Limits:
    """limits@openssh.com, asked without waiting for the answer (a round trip
    less for every session): (write, read) request sizes, 32 KiB unless the
    server names its limits, and the files it keeps open at once, 0 when
    unsaid. The answer is read when first needed, or by whichever reader
    meets it first (paramiko's, or a _Pipe's)."""

    def __init__(self, sftp: paramiko.SFTPClient, asked: int | None = None) -> None:
        """asked: the request's number where it went out already (with INIT)"""
        self.sftp = sftp
        self.values: tuple[int, int, int] | None = None
        if asked is None:
            sftp._async_request(self, CMD_EXTENDED, "limits@openssh.com")
        else:
            sftp._expecting[asked] = self

    def _async_response(self, t: int, msg: paramiko.Message, num: int) -> None:
        if t != CMD_EXTENDED_REPLY:
            self.values = SAFE_CHUNK, SAFE_CHUNK, 0  # not offered
            return
        _packet, read, write = msg.get_int64(), msg.get_int64(), msg.get_int64()
        handles = msg.get_int64()  # 0 from a shorter reply: paramiko reads past its end as zeros
        self.values = (min(write, MAX_CHUNK) if write >= SAFE_CHUNK else SAFE_CHUNK,
                       min(read, MAX_CHUNK) if read >= SAFE_CHUNK else SAFE_CHUNK, handles)

    def get(self) -> tuple[int, int, int]:
        while self.values is None:
            self.sftp._read_response()
        return self.values


@dataclass(frozen=True, slots=True)
class DiskFacts:
    free: int  # bytes an ordinary user may still write
    read_only: bool  # mounted read-only (ST_RDONLY)
    no_inodes: bool  # no file may be made any more, whatever the bytes free


ST_RDONLY = 0x1  # SSH_FXE_STATVFS_ST_RDONLY


def _disk_facts(sftp: paramiko.SFTPClient, path: bytes) -> DiskFacts | None:
    """statvfs@openssh.com where path lies; None from a server that does not offer it"""
    try:
        t, msg = sftp._request(CMD_EXTENDED, "statvfs@openssh.com", path)
    except OSError:
        return None
    if t != CMD_EXTENDED_REPLY:
        return None
    _bsize, frsize, _blocks, _bfree, bavail, files, _ffree, favail, _fsid, flag = (msg.get_int64()
                                                                                   for _ in range(10))
    return DiskFacts(frsize * bavail, bool(flag & ST_RDONLY), files > 0 and favail == 0)


def _create_exclusive(sftp: paramiko.SFTPClient, path: bytes) -> paramiko.SFTPFile:
    """open(O_CREAT|O_EXCL) with mode 0600 from the start: a name someone
    planted (a symlink included) fails instead of being written through"""
    attrs = SFTPAttributes()
    attrs.st_mode = TEMP_MODE
    t, msg = sftp._request(CMD_OPEN, path, OPEN_WRITE, attrs)
    if t != CMD_HANDLE:
        raise paramiko.sftp.SFTPError("expected a handle")
    return paramiko.SFTPFile(sftp, msg.get_binary(), "w", -1)


def _preadv(fd: int, into: memoryview, pos: int) -> int:
    try:
        n = portable.pread_into(fd, into, pos)
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
