"""Many folders of an SFTP destination listed at once over one session
(listing.py's SFTP way): their OPENDIR and READDIR in flight together, a
folder's subfolders asked for as soon as it is read, and the folders the last
run saw asked for before their parents are read."""

from __future__ import annotations

import stat as st
from typing import TYPE_CHECKING, Iterable, Iterator

from reconcile.entry import DIR, FILE, LINK, TEMP_MARK, decode_path
from reconcile.errors import NotFound, Permanent, ReconcileError
from reconcile.remotes.sftp.loader import paramiko
from reconcile.remotes.sftp.wire import (FX_NO_SUCH_FILE, FX_PERMISSION_DENIED, _Pipe, _expected, _first_name,
                                         _handle, _parse_names, _sftp_str, _status, _status_text)
from paramiko.sftp import CMD_CLOSE, CMD_HANDLE, CMD_NAME, CMD_OPENDIR, CMD_READDIR, CMD_READLINK, CMD_STAT, SFTP_EOF

if TYPE_CHECKING:
    from reconcile.remotes.sftp.remote import SftpRemote

LIST_PREFETCH = 512  # folders listed ahead of the consumer (~100 names each)
READ_AHEAD = 3  # READDIRs sent together per folder (OpenSSH answers 100 names each)
# folders the last run saw, open on the server at once: at most half the
# files the server says it keeps open (limits@openssh.com), at most this many;
# the first flight goes before that answer comes
OPEN_DIRS_MAX = 256
OPEN_DIRS_UNSAID = 64  # a server that does not say (not OpenSSH)

_TEMP = TEMP_MARK.encode()


class _Dir:
    __slots__ = ("key", "raw", "links", "left", "reads", "ended", "error", "finished", "hinted", "dropped",
                 "handle")

    def __init__(self, key: bytes, hinted: bool = False) -> None:
        self.key = key  # encoded path under the root, b"" for the root
        self.hinted = hinted  # opened before its parent was read: the last run saw it
        self.dropped = False  # its parent, read since, does not hold it as a folder: closed, never handed out
        self.handle: bytes | None = None
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
    one _Pipe. take() drives the replies until the folder asked for is done.

    hints, the folders the last run saw (in listing order), are opened ahead,
    before their parents are read: a tree the last run saw is listed in two
    round trips, not two per level. A hint is only where to look: a folder is
    handed out only once its parent's listing holds it as a folder; one that
    does not (removed, now a file or a symlink) is closed and forgotten, and a
    hint that failed to open is asked again when the walk reaches it, so the
    rows and errors are those of a walk level by level."""

    def __init__(self, remote: "SftpRemote", sftp: paramiko.SFTPClient, temps: list[str],
                 hints: Iterable[bytes] = (), limits=None) -> None:
        self.remote = remote
        self.pipe = _Pipe(sftp)
        self.temps = temps
        self.dirs: dict[bytes, _Dir] = {}
        self.waiting: dict[int, tuple[_Dir | None, int, bytes]] = {}  # request -> (folder, stage, name)
        self.root_reply: tuple[int, bytes] | None = None
        self.hints: Iterator[bytes] | None = iter(hints)
        self.limits = limits  # the session's _Limits: how many files the server keeps open
        self.open = 0  # folders opened on the server and not yet closed
        self.opening = 0  # OPENDIRs not yet answered
        self.kids: dict[bytes, list[bytes]] = {}  # folder -> the folders asked for below it
        self.read: set[bytes] = set()  # folders taken: their listing says what is below them
        self.seen: set[bytes] = set()  # folders a taken folder's listing holds
        self.gone: set[bytes] = set()  # hints dropped: not below what was read

    def room(self) -> bool:
        """one more folder may be asked for ahead: few enough held and open."""
        return len(self.dirs) < LIST_PREFETCH and self.open < self._max_open()

    def want(self, key: bytes, hinted: bool = False) -> None:
        d = self.dirs[key] = _Dir(key, hinted)
        if key:
            self.kids.setdefault(key.rpartition(b"/")[0], []).append(key)
        path = self.remote._abs(decode_path(key))
        self.waiting[self.pipe.request(CMD_OPENDIR, _sftp_str(path))] = (d, 0, b"")
        self.open += 1
        self.opening += 1

    def take(self, key: bytes) -> list[tuple]:
        """the folder's rows, sorted; NotFound when it is gone."""
        if key not in self.dirs:
            self.want(key)
        d = self.dirs[key]
        while not d.finished:
            self._step()
        if d.error is not None and d.hinted:
            # asked before its parent was read: asked again now, as a walk level by level would
            # (a server out of handles fails an OPENDIR that succeeds later)
            self.want(key)
            return self.take(key)
        del self.dirs[key]
        if d.error is not None:
            self._settle(key, ())
            raise d.error
        rows = self._rows(d)
        self._settle(key, [r[0][:-1] for r in rows if r[1] == DIR])
        self._send_hints()
        return rows

    def stat_root(self) -> tuple[int, bytes]:
        """(type, body) of the root's STAT, sent together with the root's
        OPENDIR (and the hints'): the listing starts a round trip earlier."""
        num = self.pipe.request(CMD_STAT, _sftp_str(self.remote._abs("")))
        self.waiting[num] = (None, 3, b"")
        self.want(b"")
        self._send_hints()
        while self.root_reply is None:
            self._step()
        return self.root_reply

    def drain(self) -> bool:
        """the replies still due (the last CLOSEs, read-ahead EOFs) left to
        whoever uses the session next, which drops them as they come: the
        next thread need not wait a round trip for them. A dropped hint's
        OPENDIR is waited for (its handle is closed; it was sent in the first
        flight, so its answer is here or on its way). True: the session can
        serve plain calls again."""
        for key in list(self.dirs):
            self._drop(key)  # never to be taken (a missing root's hints): their handles closed
        while self.waiting and (self.pipe.buffered() or self.opening):
            self._step()  # a reply read in part, or read and not yet parsed: here, not by the next reader
        if self.waiting:
            self.pipe.leave(list(self.waiting))
            self.waiting.clear()
        return not self.pipe.buffered()

    def _max_open(self) -> int:
        values = self.limits.values if self.limits is not None else None
        if values is None:
            return OPEN_DIRS_MAX  # not answered yet: it comes with the first replies
        return min(OPEN_DIRS_MAX, values[2] // 2) if values[2] else OPEN_DIRS_UNSAID

    def _send_hints(self) -> None:
        """the next hints opened, while few enough folders are open and held."""
        if self.hints is None:
            return
        while self.room():
            key = next(self.hints, None)
            if key is None:
                self.hints = None
                return
            parent = key.rpartition(b"/")[0]
            if parent in self.gone or (parent in self.read and key not in self.seen):
                self.gone.add(key)  # and so, in turn, every hint below it
            elif key not in self.dirs and key not in self.read and (
                    not parent or parent in self.dirs or parent in self.read):
                self.want(key, hinted=True)

    def _settle(self, key: bytes, folders: list[bytes]) -> None:
        """key was read and holds these folders: the hints below it that it
        does not hold are dropped, with everything asked for below them."""
        self.read.add(key)
        self.seen.update(folders)
        held = set(folders)
        kids = self.kids.pop(key, ())
        for kid in kids:
            if kid not in held:
                self._drop(kid)
            else:
                self.kids.setdefault(key, []).append(kid)

    def _drop(self, key: bytes) -> None:
        self.gone.add(key)
        d = self.dirs.pop(key, None)
        for kid in self.kids.pop(key, ()):
            self._drop(kid)
        if d is None:
            return
        d.dropped = True
        if d.handle is not None and not d.ended:
            d.ended = True
            self._close(d.handle)  # after its READDIRs still out, whose replies are dropped

    def _close(self, handle: bytes) -> None:
        self.waiting[self.pipe.request(CMD_CLOSE, handle)] = (None, 0, b"")
        self.open -= 1

    def _step(self) -> None:
        pipe = self.pipe
        if not pipe.ready():
            pipe.flush()
        num, t, body = pipe.next()
        d, stage, name = _expected(self.waiting, num)
        if d is None:
            if stage == 3:
                self.root_reply = (t, body)
            return  # else a CLOSE
        if stage == 0:  # opened
            self.opening -= 1
            if t != CMD_HANDLE:
                self.open -= 1
                if not d.dropped:
                    self._failed(d, t, body)
            elif d.dropped:
                d.ended = True
                self._close(_sftp_str(_handle(body)))
            else:
                d.handle = _sftp_str(_handle(body))
                self._read_ahead(d, d.handle)
            self._send_hints()
        elif stage == 1:  # names, or the end
            d.reads -= 1
            if d.ended:
                pass  # more EOFs after the first, or replies to a dropped folder
            elif t == CMD_NAME:
                _parse_names(body, d.raw)
                if not d.reads:
                    self._read_ahead(d, name)
                return
            else:
                d.ended = True
                self._close(name)  # after the reads still out
                self._send_hints()
                if _status(t, body) != SFTP_EOF:
                    d.error = self._error(d, t, body)
            if not d.reads and not d.dropped:
                if d.error is not None:
                    d.finished = True
                else:
                    self._ask_links(d)
        elif not d.dropped:  # a symlink's target
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
            elif st.S_ISDIR(mode) and _TEMP not in name and head + name not in self.dirs and self.room():
                self.want(head + name)  # now, not once the caller reaches it
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


def _plain_key(key: bytes) -> bool:
    """a relative path of plain names: no empty, '.', '..' or temp name in it."""
    return bool(key) and _TEMP not in key and not key.startswith(b"/") and all(
        part not in (b"", b".", b"..") for part in key.split(b"/"))
