"""One file sent to an SFTP destination: into a temp file, resumable from
the journal's checkpoints, as pipelined writes (concurrent ranges over
several connections for a large file), then renamed into place."""

from __future__ import annotations

import errno
import os
import stat as st
import threading
import time
from collections import deque
from concurrent.futures import FIRST_EXCEPTION, wait
from functools import partial

import xxhash

from reconcile.entry import Entry, is_safe_path, is_temp_name, parent_of
from reconcile.errors import DestinationFull, NotFound, Permanent, ReconcileError, SourceChanged, Transient
from reconcile.hashing import FileHasher
from reconcile.blockmap import BlockHasher, BlockMap
from reconcile.remotes.base import Checkpoint, Progress, Sent, as_sent
from reconcile.remotes.local import current_umask, final_mode
from reconcile.remotes.sftp.delta import CopyRefused, send_delta, tag_of
from reconcile.remotes.sftp.calls import _entry, _lstat_or_none, _name, _remove_quietly, _wire_mtime, is_temp_of
from reconcile.remotes.sftp.loader import paramiko
from reconcile.remotes.sftp.session import _Conn
from reconcile.remotes.sftp.wire import _FSYNC_EXT, _Pipe, _create_exclusive, _disk_facts, _sftp_str, _status_error
from paramiko.sftp import CMD_EXTENDED

MAX_INFLIGHT_BYTES = 4 << 20  # sent before waiting for the oldest ack
CHECKPOINT_EVERY = 16 << 20
# A kill loses what a file's writers sent past their last confirmed mark: at
# most (mark interval + bytes in flight) per range. Marks come often enough
# that all ranges together stay below this (the README promises 32 MiB).
UNCONFIRMED_MAX = 28 << 20
RANGE_MIN = 64 << 20  # files this large are written as concurrent ranges
UMASK = current_umask()  # a sent file's mode: the source's, masked by it (rsync without -p)


class Upload:
    """the one-file upload methods of an SftpRemote."""

    def upload(self, local_path: str, path: str, entry: Entry, progress: Progress | None = None,
               resume: dict | None = None, checkpoint: Checkpoint | None = None) -> Sent:
        try:
            src = open(local_path, "rb")
        except OSError as exc:
            raise NotFound(f"local file {local_path} cannot be read: {exc.strerror}") from None
        reused = 0
        with src:
            before = os.fstat(src.fileno())
            size = before.st_size
            bmap = self._delta_map(src.fileno(), size, entry, path, resume)
            tmp_rel = None
            try:
                with self._op(f"cannot write {path}", failure=Transient):
                    state = self._resume_state(self._sftp(), path, resume, size)
                    tmp_rel = state["tmp"] if state else self._temp_for(path)
                    self._left_temps.add(tmp_rel)
                    copied = self._try_delta(src.fileno(), path, tmp_rel, bmap, state, progress, checkpoint)
                    if copied is None or copied is False:
                        if copied is False:  # the server would not copy: the whole file, under a new temp name
                            state, tmp_rel = None, self._temp_for(path)
                            self._left_temps.add(tmp_rel)
                        # mapped as it is sent (one read of the file), unless mapped already
                        mapper = self._blocks.hasher(size) if bmap is None else None
                        digest = self._send_file(src.fileno(), size, tmp_rel, progress, state, checkpoint, mapper)
                        if mapper is not None:
                            bmap = self._sent_map(src.fileno(), size, entry, path, mapper if digest else None)
                        elif bmap is not None and digest is not None and digest != bmap.digest:
                            raise SourceChanged(f"{path} changed since it was mapped; left for the next run")
                    else:
                        reused, digest = copied, bmap.digest
            except Transient as exc:
                full = self._full_or(exc, path, size)
                if isinstance(full, DestinationFull) and tmp_rel is not None:
                    self._drop_temp(tmp_rel)  # its bytes are the space the next run needs
                raise full from None
            after = os.fstat(src.fileno())
        if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
            # never put a mix of two versions under the real name; the temp goes with the tidy-up
            raise SourceChanged(f"{path} changed while being uploaded; left for the next run")
        with self._op(f"cannot finish {path}"):
            sftp = self._sftp()
            tmp = self._abs(tmp_rel)
            attr = sftp.lstat(tmp)
            if not st.S_ISREG(attr.st_mode or 0):
                # SETSTAT follows a link: a temp file swapped for one would give its target our times and mode
                raise Permanent(f"cannot finish {path}: its temp file {tmp_rel} was replaced on the server "
                                "(by a symlink?); reconcile never sets times or modes through one")
            got = attr.st_size
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
        if bmap is not None:
            self._blocks.put(path, bmap, tag_of(result.size, result.mtime_ns))
        return as_sent(result, reused)

    def _full_or(self, exc: Transient, path: str, size: int) -> Transient:
        """exc, or DestinationFull where the server refused the write: OpenSSH
        answers a write to a full disk with a bare "Failure", which reads like a
        lost connection and would be retried for --retry-for. A server that says
        how much is free (statvfs@openssh.com) and has no room is full; one that
        cannot say, or says it has room (a quota? no inodes left?), is asked once
        more: a session that still answers was not lost, so it is not retried."""
        if isinstance(exc, DestinationFull) or not _bare_failure(str(exc)):
            return exc
        folder = self._abs(parent_of(path))
        try:
            with self._op(f"cannot write {path}", failure=Transient):
                sftp = self._sftp()
                disk = _disk_facts(sftp, folder) if self.options.extra.get("sftp_statvfs", True) else None
                if disk is None or disk.free >= size:
                    sftp.lstat(folder)  # does the session still answer?
        except ReconcileError:
            return exc
        if disk is not None and disk.read_only:
            return DestinationFull(f"the destination's disk is mounted read-only on the server (cannot write {path}): "
                                   "make it writable or choose another folder, then run again")
        if disk is not None and disk.free < size:
            return DestinationFull(f"{DestinationFull.WHY} (cannot write {path}: {disk.free:,} bytes free on the "
                                   f"server, {size:,} needed): free space on it, then run again")
        if disk is not None and disk.no_inodes:
            return DestinationFull(f"{DestinationFull.WHY}: no new file can be made there (cannot write {path}: "
                                   "no inodes left on the server's disk): remove files on it, then run again")
        room = "cannot say how much space is free" if disk is None else f"says {disk.free:,} bytes are free"
        return DestinationFull(f"{DestinationFull.WHY}, or refused the write otherwise (cannot write {path}: the "
                               f"server answered a bare Failure and {room}): free space on it or read its log, "
                               "then run again")

    def _drop_temp(self, tmp_rel: str) -> None:
        try:
            _remove_quietly(self._sftp(), self._abs(tmp_rel))
            self._left_temps.discard(tmp_rel)
        except (ReconcileError, OSError):
            pass  # the next run's tidy-up removes it

    def _delta_map(self, fd: int, size: int, entry: Entry, path: str, resume: dict | None) -> BlockMap | None:
        """the new version's block map before anything is sent, where a delta
        may follow (the old version's blocks are on record and the server
        copies); else None, and a full upload maps the file as it reads it"""
        if not self._copy_data or (resume and "ranges" in resume) or self._blocks.get(path) is None:
            return None
        return self._blocks.map_new(fd, size, entry.hash, path, taken=entry.block_map)

    def _sent_map(self, fd: int, size: int, entry: Entry, path: str, mapper: BlockHasher | None) -> BlockMap | None:
        """the block map of what a full upload sent: the mapper's, where it saw
        the whole file go (a resumed upload sent only the rest: read it now)"""
        if mapper is None:
            return self._blocks.map_new(fd, size, entry.hash, path, taken=entry.block_map)
        if entry.hash is not None and mapper.digest() != entry.hash:
            raise SourceChanged(f"{path} changed since it was scanned; left for the next run")
        return mapper.block_map()

    def _try_delta(self, fd: int, path: str, tmp_rel: str, bmap: BlockMap | None, state: dict | None,
                   progress: Progress | None, checkpoint: Checkpoint | None) -> int | bool | None:
        """bytes copied on the server; None: no delta (send it whole into tmp_rel);
        False: the server refused to copy and tmp_rel is gone"""
        if bmap is None:
            return None
        try:
            return send_delta(self, fd, path, tmp_rel, bmap, state, progress, checkpoint)
        except CopyRefused:
            return False

    def _final_mode(self, sftp: paramiko.SFTPClient, tmp: bytes, entry: Entry) -> None:
        perms = bool(self.options.extra.get("perms"))
        try:
            sftp.chmod(tmp, final_mode(entry.mode, perms, UMASK))
        except OSError:
            if perms:
                raise  # else the file stays private (0600): a server without chmod

    def _send_file(self, fd: int, size: int, tmp_rel: str, progress: Progress | None,
                   state: dict | None, checkpoint: Checkpoint | None, mapper: BlockHasher | None = None) -> bytes | None:
        """the xxh3 of what was sent, where the whole file was read as it went
        (mapper, if given, saw every byte of it then); None after a resume."""
        sftp = self._sftp()
        if state is None and size >= RANGE_MIN and self.transfers > 1:
            state = {"tmp": tmp_rel, "confirmed": 0, "ranges": _split(size, min(self.transfers, 4))}
        tmp = self._abs(tmp_rel)
        if state is not None and "ranges" in state:
            if state["confirmed"] == 0:
                f = self._open_temp(sftp, tmp_rel, truncate=True)
                try:
                    state["marked"] = _mark(f)
                finally:
                    f.close()
            return self._send_ranges(fd, tmp, state, progress, checkpoint, mapper)
        start = state["confirmed"] if state else 0
        f = self._open_temp(sftp, tmp_rel, truncate=start == 0)
        try:
            if start:
                f.truncate(start)

            def confirmed(n: int) -> None:
                if checkpoint:
                    checkpoint({"tmp": tmp_rel, "confirmed": n})

            hasher = None if start else mapper or xxhash.xxh3_128()
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
            return {"tmp": tmp_rel, "confirmed": resume.get("confirmed", 0), "ranges": ranges,
                    "marked": resume.get("marked") is True} if ok else None
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
                    progress: Progress | None, confirmed, marks: bool = True, hasher=None,
                    mark_every: int = CHECKPOINT_EVERY) -> None:
        """pipelined writes of fd[pos:end]; confirmed(n) after each mark_every
        bytes are acknowledged (and fsynced where the server can). Without marks
        (a file below the checkpoint size, sent again whole if cut) neither happens."""
        pipe = _Pipe(conn.sftp)
        pending: deque[tuple[int, int, bool]] = deque()  # (request, end offset, is fsync)
        try:
            self._write_range(pipe, conn, handle, fd, pos, end, pending, progress, confirmed,
                              mark_every if marks else 0, hasher)
        except BaseException:
            if pending or not pipe.idle:
                self._discard(conn)  # replies still due: paramiko must not read them
            raise

    def _write_range(self, pipe: _Pipe, conn: _Conn, handle: bytes, fd: int, pos: int, end: int,
                     pending: deque, progress: Progress | None, confirmed, mark_every: int, hasher) -> None:
        replies: dict[int, tuple[int, bytes]] = {}
        last_mark = pos
        while pos < end or pending:
            while pos < end and len(pending) * conn.write_chunk < MAX_INFLIGHT_BYTES:
                num, n = pipe.write_from(handle, fd, pos, min(conn.write_chunk, end - pos), hasher)
                pos += n
                pending.append((num, pos, False))
                if progress:
                    progress(n)
                if mark_every and (pos - last_mark >= mark_every or pos == end):
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
                     checkpoint: Checkpoint | None, mapper: BlockHasher | None = None) -> bytes | None:
        """concurrent range writers, each over its own connection; the caller's
        thread reports progress and checkpoints, and hashes the file meanwhile
        (reads and xxh3 free the GIL; mapper, if given, maps it on that pass).
        The file's xxh3, or None if it shrank."""
        ranges: list[list[int]] = state["ranges"]  # [start, end, confirmed up to]
        lock = threading.Lock()
        sent = [0]

        def count(n: int) -> None:
            with lock:
                sent[0] += n

        def note(r: list[int], n: int) -> None:
            # in the journal as soon as confirmed: a kill then loses only what is unconfirmed
            with lock:
                r[2] = n
                if checkpoint:
                    snapshot = [list(x) for x in ranges]
                    checkpoint({"tmp": state["tmp"], "confirmed": sum(x[2] - x[0] for x in snapshot),
                                "ranges": snapshot, "marked": state.get("marked", False)})

        every = _mark_every(len(ranges))

        def run(r: list[int], conn: _Conn | None) -> None:
            with self._op("cannot write range", failure=Transient):
                conn = conn or self._conn(own=True)  # its own connection: its own packet thread
                f = conn.sftp.open(tmp, "r+")  # by name: SFTP follows a link swapped in since we made it
                try:
                    if state.get("marked") and not _is_marked(f):
                        raise Permanent(f"cannot write {state['tmp']}: the temp file was replaced on the server "
                                        "(by a symlink?); reconcile never writes through one")
                    self._send_range(conn, f.handle, fd, r[2], r[1], count, partial(note, r), mark_every=every)
                finally:
                    f.close()

        # the first range goes over this thread's connection, idle meanwhile: one connection less
        mine = self._conn()
        futures = [self._executor().submit(run, r, mine if k == 0 else None)
                   for k, r in enumerate(r for r in ranges if r[2] < r[1])]
        reported = 0
        hasher = FileHasher(fd, ranges[-1][1], mapper)
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
            if progress and delta:
                progress(delta)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                wait(futures)  # let the other writers stop before we report
                raise failed[0].exception()
            if len(done) == len(futures):
                break
        return hasher.digest()


def _mark_every(ranges: int) -> int:
    """the mark interval that keeps a file's unconfirmed bytes below UNCONFIRMED_MAX"""
    room = UNCONFIRMED_MAX // ranges - MAX_INFLIGHT_BYTES
    return max(1 << 20, min(CHECKPOINT_EVERY, room // (1 << 20) * (1 << 20)))


# Range writers reopen the temp file by its name, each on its own connection.
# Its access time, set far ahead through the handle that made it, tells them
# it is still that file: a file it was swapped for (a symlink's target) has
# its own, which only its owner could set so. FAT keeps an access day only.
MARK_ATIME = 4_000_000_000  # 2096-10-02; reads leave a future atime alone (relatime)
MARK_SLACK = 2 * 86400


def _mark(f: paramiko.SFTPFile) -> bool:
    """true when the server kept the mark (some keep no access time: unchecked there)"""
    try:
        f.utime((MARK_ATIME, int(time.time())))
        return _is_marked(f)
    except OSError:
        return False


def _is_marked(f: paramiko.SFTPFile) -> bool:
    a = f.stat()
    return st.S_ISREG(a.st_mode or 0) and abs((a.st_atime or 0) - MARK_ATIME) <= MARK_SLACK


def _split(size: int, n: int) -> list[list[int]]:
    """n ranges on MiB boundaries as [start, end, confirmed up to]."""
    step = -(-size // n // (1 << 20)) * (1 << 20)
    starts = list(range(0, size, step))
    return [[s, min(s + step, size), s] for s in starts]


def _bare_failure(message: str) -> bool:
    """an SFTP "Failure" status, as _op words it: on a live session ("cannot
    write x: Failure": an OPEN refused by a read-only disk, say) or after it
    ("... connection lost (Failure)": a write to a full disk)"""
    return message.endswith("(Failure)") or message.endswith(": Failure")
