"""Listing an SFTP destination: many folders' OPENDIR and READDIR in flight
over one session (_Lister), a folder's subfolders asked for as soon as it is
read (one round trip or two per level of the tree, not per folder), the
folders the last run saw asked for before their parents are read (two round
trips for the whole tree, whatever its depth), or one
find | sort over ssh (findlist.py) on large trees. A large tree is listed in
a forked child where it can (forked.py): its own connection, on the second
core. A smaller one is listed by a thread over a session on the run's one
connection, handed on afterwards to the thread that applies the plan."""

from __future__ import annotations

import os
import queue
import socket
import stat as st
import sys
import threading
from typing import TYPE_CHECKING, Iterable, Iterator

from reconcile import forked
from reconcile.entry import DIR, FILE, LINK, TEMP_MARK, Entry, decode_path, entry_of, is_temp_name, sort_key
from reconcile.errors import ConfigError, NotFound, Permanent, ReconcileError, Transient
from reconcile.remotes.sftp import findlist
from reconcile.remotes.sftp.calls import _raw_entry, _readlink
from reconcile.remotes.sftp.loader import paramiko
from reconcile.remotes.sftp.session import IO_TIMEOUT, _Conn
from reconcile.remotes.sftp.wire import (FX_NO_SUCH_FILE, FX_PERMISSION_DENIED, _Pipe, _attrs, _expected, _first_name,
                                         _handle, _parse_names, _readdir, _realpath, _sftp_str, _status,
                                         _status_text)
from paramiko.sftp import (CMD_ATTRS, CMD_CLOSE, CMD_HANDLE, CMD_NAME, CMD_OPENDIR, CMD_READDIR, CMD_READLINK,
                           CMD_STAT, SFTP_EOF)
from paramiko.sftp_attr import SFTPAttributes

if TYPE_CHECKING:
    from reconcile.remotes.sftp.remote import SftpRemote

LIST_PREFETCH = 512  # folders listed ahead of the consumer (~100 names each)
READ_AHEAD = 3  # READDIRs sent together per folder (OpenSSH answers 100 names each)
# folders the last run saw, open on the server at once: at most half the
# files the server says it keeps open (limits@openssh.com), at most this many;
# the first flight goes before that answer comes
OPEN_DIRS_MAX = 256
OPEN_DIRS_UNSAID = 64  # a server that does not say (not OpenSSH)
FIND_FROM = 10_000  # entries from which a tree is listed by find over ssh (ssh_find = "auto")
# entries from which a forked child lists: below, its own connection (a
# handshake, 7+ round trips) costs more than the second core saves
FORK_LIST_FROM = 10_000
FIND_WINDOW = 4 << 20  # the listing unread in this process stays below this
FIND_POLL = 1.0  # seconds between looks at stderr while find runs
FIND_PATIENCE = 3600.0  # a find | sort silent this long (connection alive) is given up
ROW_BATCH, ROW_BATCHES = 256, 8  # rows handed from the listing thread at a time; batches queued
MAX_DEPTH = 800  # folders below the root a listing follows (Python's recursion stops near 1000)


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


class Listing:
    """the listing methods of an SftpRemote."""

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
            self._root_missing = True
            raise
        if first is not None:
            yield first
            yield from rows

    def _listed_rows(self) -> Iterator[tuple]:
        temps: list[str] = []
        if forked.available() and self.options.expected_entries >= FORK_LIST_FROM:
            if self._may_prompt() and not self._connected():
                with self._op(f"cannot list {self.url}"):
                    self._sftp()  # a prompted secret is asked here once, and kept for later connections
            self._close_for_fork()
            yield from forked.rows(lambda: self._child_runs(temps),
                                   tail=(lambda: (temps, self.net.as_list()), lambda t: self._child_tail(temps, *t)),
                                   here=lambda: self._runs_here(temps))
        else:
            for run in self._runs_here(temps):
                yield from run
        self._seen_temps = temps

    def _child_tail(self, temps: list[str], child_temps: list[str], child_net: list[int]) -> None:
        temps.extend(child_temps)
        self.net.add(child_net)

    def _close_for_fork(self) -> None:
        """no thread of a connection of ours may run at the fork (forked.py):
        close them; the next call connects afresh."""
        if self._conns or self._pool is not None or self._home is not None:
            self.close()

    def _runs_here(self, temps: list[str]) -> Iterator[list[tuple]]:
        """the listing in this process, in runs of rows, over a session of
        its own on the run's connection."""
        with self._op(f"cannot list {self.url}"):
            conn = self._take_idle_session() or self._session()
        with self._lock:
            self._conns.add(conn)
        stop = threading.Event()
        lister: threading.Thread | None = None
        ended = False
        try:
            out: queue.Queue = queue.Queue(ROW_BATCHES)
            # a thread of its own, so the replies are read while the caller
            # waits on its own disk (the source walk's lstat)
            lister = threading.Thread(target=self._list_into, args=(conn, temps, out, stop),
                                      name="sftp-list", daemon=True)
            lister.start()
            while (batch := out.get()) is not None:
                if isinstance(batch, BaseException):
                    ended = conn.clean  # a first sync's missing root
                    raise batch
                yield batch
            ended = True
        finally:
            stop.set()
            with self._lock:
                self._conns.discard(conn)
            if ended and lister is not None:
                self._hand_on(lister, conn)  # the apply's session: three round trips saved
            else:
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
        find = self._lists_by_find()
        lister = None if find else _Lister(self, conn.sftp, temps, self._hints(), conn.limits)
        attr = self._root_attr(conn, lister)
        if not st.S_ISDIR(attr.st_mode or 0):
            raise ConfigError(f"destination {self.url} is a file, not a folder")
        if find:
            try:
                yield from self._find_runs(conn, temps)
                return
            except findlist.Unusable:
                temps.clear()  # nothing was handed out: list over SFTP instead
                lister = _Lister(self, conn.sftp, temps, self._hints(), conn.limits)
        conn.finish = lister.drain  # the replies still due once the rows are out
        batch: list[tuple] = []
        for row in self._walk_rows(lister, b""):
            batch.append(row)
            if len(batch) >= ROW_BATCH:
                yield batch
                batch = []
        yield batch

    def _hints(self) -> Iterator[bytes]:
        """the folders the last run saw (RemoteOptions.known_folders), as keys
        under the root; only plain relative paths."""
        known = self.options.known_folders
        if known is None:
            return iter(())
        return (k for k in known() if _plain_key(k))

    def _root_attr(self, conn: _Conn, lister: "_Lister | None") -> SFTPAttributes:
        """the root's attributes; with a lister, asked together with the
        root's OPENDIR. NotFound leaves the session clean (a first sync)."""
        what = f"cannot list {self.url}"
        if lister is None:
            try:
                with self._op(what):
                    return conn.sftp.stat(self._abs(""))
            except NotFound:
                conn.clean = True
                raise
        with self._op(what):
            t, body = lister.stat_root()
        if t == CMD_ATTRS:
            return _attrs(body)
        with self._op(what):
            clean = lister.drain()  # the OPENDIR's failure too
        code = _status(t, body)
        if code == FX_NO_SUCH_FILE:
            conn.clean = clean
            raise NotFound(f"{what}: no such file or folder")
        if code == FX_PERMISSION_DENIED:
            raise Permanent(f"{what}: permission denied")
        raise Permanent(f"{what}: {_status_text(t, body)}")

    def _lists_by_find(self) -> bool:
        """find over ssh where the tree is large: starting a shell on the
        server costs more than a small tree's SFTP listing (~0.1 s here)."""
        way = self.options.sftp.find
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
            t, msg = _realpath(conn.sftp, root)
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
            if conn.finish is not None:  # after the rows: the caller goes on meanwhile
                with self._op(f"cannot list {self.url}"):
                    conn.clean = conn.finish()
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
            if r[1] == DIR and r[0][:-1] not in lister.dirs and lister.room():
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
