"""Delta upload of a large changed file to an SFTP server (blockmap.py): the
unchanged blocks are copied on the server from the old file into the temp
file with OpenSSH's copy-data extension (OpenSSH 9.0+; paramiko does not wrap
it, so the request is sent raw), the changed ones are written, each checked
against its xxh3 as it is read; then the usual rename.

The old file must still be the one the recorded blocks describe: same size
and mtime (to the second: SFTP v3 carries no finer one), read through the
handle the copies come from. A file rewritten behind our back with its size
and mtime kept is beyond what SFTP lets us see without reading it back.

Progress goes to the journal as on a plain upload ({"tmp", "confirmed"}): a
resumed delta goes on from the last confirmed block, a plain resume of it
sends the rest whole; either way the temp file's prefix is the new version.
"""

from __future__ import annotations

import stat as st
import struct

import xxhash
from paramiko.sftp import CMD_EXTENDED

from reconcile.blockmap import BlockMap, runs
from reconcile.errors import SourceChanged
from reconcile.remotes.base import Checkpoint, Progress
from reconcile.remotes.sftp.calls import _lstat_or_none, _remove_quietly
from reconcile.remotes.sftp.session import _Conn
from reconcile.remotes.sftp.wire import _FSYNC_EXT, _Pipe, _sftp_str, _status

_COPY_EXT = _sftp_str(b"copy-data")
COPY_STEP = 64 << 20  # bytes per copy-data request: the server answers once it copied them
FX_OK = 0


def tag_of(size: int, mtime_ns: int | None) -> dict:
    """which remote file a block map describes"""
    return {"size": size, "mtime_ns": mtime_ns}


class CopyRefused(Exception):
    """the server would not copy (no copy-data extension, or it said no)"""


def send_delta(remote, fd: int, path: str, tmp_rel: str, bmap: BlockMap, state: dict | None,
               progress: Progress | None, checkpoint: Checkpoint | None) -> int | None:
    """the new version into tmp_rel from the old file's unchanged blocks and
    fd's changed ones: bytes copied on the server, or None when a delta cannot
    be done (nothing written then). CopyRefused: the server would not copy;
    the temp file is gone and the whole file goes under a new one."""
    if not remote._copy_data or (state is not None and "ranges" in state):
        return None
    known = remote._blocks.reusable(path, bmap)
    if known is None:
        return None
    flags, _, tag = known
    sftp, conn = remote._sftp(), remote._conn()
    link = _lstat_or_none(sftp, remote._abs(path))
    if link is None or not st.S_ISREG(link.st_mode or 0):
        return None  # gone, or a symlink now (OPEN would follow it): send it whole
    try:
        old = sftp.open(remote._abs(path), "r")
    except OSError:
        return None  # gone, or unreadable: send it whole
    try:
        attr = old.stat()
        if not st.S_ISREG(attr.st_mode or 0) or tag_of(attr.st_size, (attr.st_mtime or 0) * 10**9) != tag:
            return None  # changed since its blocks were recorded
        start = state["confirmed"] // bmap.block * bmap.block if state else 0
        out = remote._open_temp(sftp, tmp_rel, truncate=state is None)
        try:
            return _fill(remote, conn, fd, old.handle, out.handle, tmp_rel, bmap, runs(flags, bmap.block, bmap.size),
                         start, progress, checkpoint)
        except CopyRefused:
            remote._copy_data = False  # not again on this server
            _remove_quietly(sftp, remote._abs(tmp_rel))
            remote._left_temps.discard(tmp_rel)
            raise
        finally:
            out.close()
    finally:
        old.close()


def _fill(remote, conn: _Conn, fd: int, old: bytes, out: bytes, tmp_rel: str, bmap: BlockMap,
          stretches: list[tuple[int, int, bool]], start: int, progress: Progress | None,
          checkpoint: Checkpoint | None) -> int:
    def confirmed(n: int) -> None:
        if checkpoint:
            checkpoint({"tmp": tmp_rel, "confirmed": n})

    reused = 0
    for offset, length, same in stretches:
        end = offset + length
        if end <= start:
            continue
        pos = max(offset, start)
        if same:
            _copy(remote, conn, old, out, pos, end)
            reused += end - pos
            confirmed(end)
            continue
        for block_at in range(pos, end, bmap.block):
            block_end = min(block_at + bmap.block, end)
            sent = xxhash.xxh3_128()
            remote._send_range(conn, out, fd, block_at, block_end, progress, confirmed, marks=True, hasher=sent)
            if sent.digest() != bmap.blocks[block_at // bmap.block]:
                raise SourceChanged("the file changed while being uploaded; left for the next run")
    return reused


def _copy(remote, conn: _Conn, old: bytes, out: bytes, pos: int, end: int) -> None:
    """old[pos:end] to the same place in out, on the server; then fsynced"""
    pipe = _Pipe(conn.sftp)
    try:
        while pos < end:
            n = min(COPY_STEP, end - pos)
            num = pipe.request(CMD_EXTENDED, _COPY_EXT, _sftp_str(old), struct.pack(">QQ", pos, n),
                               _sftp_str(out), struct.pack(">Q", pos))
            pipe.flush()
            t, body = pipe.reply(num, {}, [(num,)])
            if _status(t, body) != FX_OK:
                raise CopyRefused()
            pos += n
        if not conn.no_fsync:
            num = pipe.request(CMD_EXTENDED, _FSYNC_EXT, _sftp_str(out))
            pipe.flush()
            t, body = pipe.reply(num, {}, [(num,)])
            if _status(t, body) != FX_OK:
                conn.no_fsync = True  # as a plain upload: the acks confirm then
    except CopyRefused:
        raise
    except BaseException:
        remote._discard(conn)  # a reply may still be due: paramiko must not read it
        raise
