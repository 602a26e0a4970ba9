"""Listing an SFTP destination: many folders' OPENDIR and READDIR in flight
over one session (_Lister, lister.py), a folder's subfolders asked for as soon as it is
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
from typing import Iterator

from reconcile import forked
from reconcile.entry import DIR, LINK, Entry, decode_path, entry_of, is_temp_name, sort_key
from reconcile.errors import ConfigError, NotFound, Permanent, Transient
from reconcile.remotes.sftp import findlist, headstart
from reconcile.remotes.sftp.calls import _raw_entry, _readlink
from reconcile.remotes.sftp.lister import _Lister, _plain_key
from reconcile.remotes.sftp.loader import paramiko
from reconcile.remotes.sftp.session import IO_TIMEOUT, _Conn
from reconcile.remotes.sftp.wire import (FX_NO_SUCH_FILE, FX_PERMISSION_DENIED, _Pipe, _attrs, _expected, _first_name,
                                         _readdir, _realpath, _sftp_str, _status, _status_text)
from paramiko.sftp import CMD_ATTRS, CMD_NAME, CMD_READLINK
from paramiko.sftp_attr import SFTPAttributes

FIND_FROM = 10_000  # entries from which a tree is listed by find over ssh (ssh_find = "auto")
# entries from which a forked child lists: below, its own connection (a
# handshake, 7+ round trips) costs more than the second core saves
FORK_LIST_FROM = headstart.LIST_IN_A_CHILD_FROM  # entries the last run saw: listed in a forked child from there
FIND_WINDOW = 4 << 20  # the listing unread in this process stays below this
FIND_POLL = 1.0  # seconds between looks at stderr while find runs
FIND_PATIENCE = 3600.0  # a find | sort silent this long (connection alive) is given up
ROW_BATCH, ROW_BATCHES = 256, 8  # rows handed from the listing thread at a time; batches queued
MAX_DEPTH = 800  # folders below the root a listing follows (Python's recursion stops near 1000)



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
            if self._probe_saw_no_root:
                self._probe_saw_no_root = False  # once: a retried listing asks the server
                self._hand_on_idle()
                raise NotFound(f"cannot list {self.url}: no such folder (a first sync)")
            first = next(rows, None)
        except NotFound:
            # no root yet, so no temp files in it: none to look for after the run
            self._seen_temps = []
            self._root_missing = True
            raise
        if first is not None:
            yield first
            yield from rows

    def _hand_on_idle(self) -> None:
        """this thread's session (a first run's probe's) serves the next
        thread that needs one, as a listing's session would have."""
        conn = self._take_idle_session()
        if conn is not None:
            conn.clean = True
            self._hand_on(None, conn)

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
        if self._conns or self._pool is not None or self._home is not None or headstart.pending():
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
