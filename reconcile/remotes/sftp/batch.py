"""Many small files sent to an SFTP destination together (upload_many):
open, writes, fsetstat, close and rename of many files pipelined over one
connection."""

from __future__ import annotations

import os
import stat
import struct
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import xxhash

from reconcile import portable
from reconcile.entry import Entry, encode_path, parent_of
from reconcile.errors import NotFound, Permanent, ReconcileError, SourceChanged, Transient
from reconcile.remotes.base import Progress, SmallUpload
from reconcile.remotes.local import final_mode
from reconcile.remotes.sftp.calls import _wire_mtime
from reconcile.remotes.sftp.loader import paramiko
from reconcile.remotes.sftp.session import IO_TIMEOUT, _Conn
from reconcile.remotes.sftp.upload import MAX_INFLIGHT_BYTES, UMASK
from reconcile.remotes.sftp.wire import (ATTR_PERMS, ATTR_TIMES, FX_NO_SUCH_FILE, FX_OK, FX_OP_UNSUPPORTED, _NO_ATTRS,
                                         _OPEN_ARGS, _RENAME_EXT, _Pipe, _attrs, _expected, _handle, _sftp_str,
                                         _status)
from paramiko.sftp import (CMD_ATTRS, CMD_CLOSE, CMD_EXTENDED, CMD_FSETSTAT, CMD_HANDLE, CMD_LSTAT, CMD_MKDIR, CMD_OPEN,
                          CMD_WRITE)

SMALL_FILE = 1 << 20  # whole files up to this size may go through upload_many
# small files open at once per session (from OPEN to the CLOSE's answer; their renames are not counted),
BATCH_FILES = 64  # unless the server says how many files it keeps open
BATCH_FILES_MAX = 256  # ...then up to half of those, at most this many (at RTT 50 ms: 4.5 s -> 3.6 s for 2,000 files)


ROOT_CHECK = 3  # the stage of the root's lstat in a pipeline that makes the root


class _RootNotMade(Exception):
    """the root, made ahead of a pipeline's files, is not there after all."""


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
    created: bool = False  # the temp file is ours: our exclusive open of it succeeded


class Batch:
    """the many-small-files methods of an SftpRemote."""

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
        ahead = False
        try:
            with self._op(f"cannot write to {self.url}", failure=Transient):
                conn = self._conn()
                ahead = self._claim_root()
                if not ahead:
                    self._root_once(conn.sftp)
                self._pipeline(conn, iter(items), done, progress, slow, ahead)
        except _RootNotMade:
            self._drop()  # its files' requests are in flight
            with self._op(f"cannot write to {self.url}", failure=Transient):
                self._root_once(self._sftp())  # says why it cannot be made, as it would have first
            raise Transient(f"cannot write to {self.url}: its folder was made only on a second try") from None
        except BaseException:
            if ahead:
                self._root_verdict(False)  # the threads waiting for it make it themselves
            self._drop()  # requests may still be in flight on it
            raise
        for f in slow:
            self._finish_slow(f, done, progress)

    def _pipeline(self, conn: _Conn, items: Iterator[SmallUpload], done, progress: Progress | None,
                  slow: list[_Small], make_root: bool = False) -> None:
        pipe = _Pipe(conn.sftp)
        waiting: dict[int, tuple[_Small | None, int]] = {}  # request -> (file, stage)
        if make_root:
            self._ask_root(pipe, waiting)
        made: set[str] = set()  # folders created for this batch
        files = held = 0
        more = True
        most = min(BATCH_FILES_MAX, conn.max_handles // 2) if conn.max_handles else BATCH_FILES
        while True:
            while more and files < most and held < MAX_INFLIGHT_BYTES:
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
            if f is None:  # a folder made ahead (a failure shows in its files' opens), or the root's check
                if stage == ROOT_CHECK:
                    self._root_checked(t, body)
                continue
            if stage == 0:  # opened
                if t == CMD_HANDLE:
                    f.created = True
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
                # its handle is closed: the next file may open while this one's rename is out
                files, held = files - 1, held - f.size
                if f.ok:
                    f.sent = True
                    f.item.hash = xxhash.xxh3_128_digest(f.data)
                    f.data = b""
                    if progress:
                        progress(f.size)
                    if not conn.no_posix_rename:
                        waiting[pipe.request(CMD_EXTENDED, _RENAME_EXT, _sftp_str(f.tmp), _sftp_str(f.dst))] = (f, 2)
                        continue
                f.data = b""
                slow.append(f)
                continue
            elif stage == 2:  # renamed
                code = _status(t, body)
                if code == FX_OK:
                    self._left_temps.discard(f.tmp_rel)
                    done(f.item, None)
                    continue
                conn.no_posix_rename = code == FX_OP_UNSUPPORTED
                slow.append(f)
                continue
            files, held = files - 1, held - f.size  # not opened
            f.data = b""
            slow.append(f)

    def _root_once(self, sftp: paramiko.SFTPClient) -> None:
        """a missing root would send every file of a first sync down the slow
        path; one thread makes it while the others wait (their mkdirs of the
        same folder would fail and be retried)."""
        maker = self._root_maker
        if maker is not None:
            maker.wait(IO_TIMEOUT)  # a pipeline is making it: its answer first
        with self._root_lock:
            if not self._root_ready:
                self._make_root(sftp)
                self._root_ready = True

    def _claim_root(self) -> bool:
        """True: the root is known missing (a first sync) and this thread's
        pipeline makes it, ahead of its first files, instead of waiting a
        round trip for it first."""
        with self._root_lock:
            if self._root_ready or not self._root_missing or self._root_maker is not None:
                return False
            self._root_maker = threading.Event()
            return True

    def _ask_root(self, pipe: _Pipe, waiting: dict) -> None:
        """each folder down to the root made (those there fail harmlessly),
        then the root's lstat, which says whether it worked: in the pipe,
        ahead of the files (one server serves a session's requests in turn)."""
        for path in self._root_chain():
            waiting[pipe.request(CMD_MKDIR, _sftp_str(encode_path(path)), _NO_ATTRS)] = (None, 0)
        waiting[pipe.request(CMD_LSTAT, _sftp_str(self._abs("")))] = (None, ROOT_CHECK)

    def _root_checked(self, t: int, body: bytes) -> None:
        made = t == CMD_ATTRS and stat.S_ISDIR(_attrs(body).st_mode or 0)
        self._root_verdict(made)
        if not made:
            raise _RootNotMade()

    def _root_verdict(self, made: bool) -> None:
        with self._root_lock:
            self._root_ready = self._root_ready or made
            maker = self._root_maker
        if maker is not None:
            maker.set()

    def _ask_parent(self, pipe: _Pipe, waiting: dict, f: _Small) -> None:
        """a folder not yet seen this run is made ahead of the first open in
        it, and so is each folder above it not yet seen, top down (each fails
        harmlessly when it exists), so its files do not all fail once."""
        missing = []
        folder = parent_of(f.item.path)
        while folder and folder not in self._dirs_seen:
            self._dirs_seen.add(folder)
            missing.append(folder)
            folder = parent_of(folder)
        for folder in reversed(missing):
            waiting[pipe.request(CMD_MKDIR, _sftp_str(self._abs(folder)), _NO_ATTRS)] = (None, 0)

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
            fd = os.open(item.local_path, os.O_RDONLY | portable.BINARY)
        except OSError as exc:
            done(item, NotFound(f"local file {item.local_path} cannot be read: {exc.strerror}"))
            return None
        try:
            before = os.fstat(fd)
            # the plan's size first: a file that grew since is never read whole into memory
            data = portable.pread(fd, before.st_size, 0) if before.st_size and before.st_size == e.size else b""
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
        """the writes and the fsetstat of one file, built here in one go
        (numbers taken together: the per-request cost is most of a small
        file's CPU), then its close as a request of its own"""
        h = _sftp_str(handle)
        step = conn.write_chunk
        starts = range(0, f.size, step)
        count = len(starts) + 1
        num = pipe.reserve(count)
        first, hl, view, parts = num, len(h), memoryview(f.data), []
        for pos in starts:
            piece = view[pos:pos + step]
            parts.append(struct.pack(f">IBI{hl}sQI", 17 + hl + len(piece), CMD_WRITE, num, h, pos, len(piece)))
            parts.append(piece)
            num += 1
        parts.append(struct.pack(f">IBI{hl}s", 5 + hl + len(f.attrs), CMD_FSETSTAT, num, h) + f.attrs)
        pipe.queue(*parts)
        stage = (f, 1)
        for num in range(first, first + count):
            waiting[num] = stage
        waiting[pipe.request(CMD_CLOSE, h)] = stage  # same handle: served after the writes
        f.pending = count + 1

    def _finish_slow(self, f: _Small, done, progress: Progress | None) -> None:
        """a file the pipeline could not finish: rename what it sent, or send it again."""
        item = f.item
        try:
            if f.sent:
                with self._op(f"cannot finish {item.path}"):
                    self._replace(self._sftp(), f.tmp, f.dst)
                self._left_temps.discard(f.tmp_rel)
            else:
                if f.created:  # what the pipeline wrote of it goes: it is sent again whole under a new name
                    self._drop_temp(f.tmp_rel)
                self.upload(item.local_path, item.path, item.entry, progress)
        except Transient:
            raise
        except ReconcileError as exc:
            done(item, exc)
            return
        done(item, None)
