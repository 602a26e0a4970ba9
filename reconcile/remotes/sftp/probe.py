"""What the disk behind an SFTP server keeps, found out by trying it.

A phone's SD card or a NAS sharing a USB disk is often exFAT or FAT32 behind
the server: 'A' and 'a' are one name there, ':' and '?' cannot be stored,
symlinks cannot be made and FAT keeps times to 2 s. The server does not say
so; a probe file in the destination folder does, once per destination (the
facts are kept in the remote's state folder, as for a local disk: fsprobe.py).
"""

from __future__ import annotations

import uuid

from reconcile.entry import TEMP_MARK
from reconcile.remotes.fsprobe import FAT_EPOCH_NS, FAT_END_NS, SECOND, DestFacts
from reconcile.remotes.sftp.loader import paramiko
from reconcile.remotes.sftp.wire import _UNDONE, OPEN_WRITE, TEMP_MODE, _ok, _Replies
from paramiko.sftp import CMD_ATTRS, CMD_CLOSE, CMD_FSETSTAT, CMD_FSTAT, CMD_HANDLE, CMD_LSTAT, CMD_OPEN, CMD_REMOVE, CMD_SYMLINK
from paramiko.sftp_attr import SFTPAttributes

SERVER_DISK = "the server's disk"  # named in messages: the file system type is not known over SFTP
PROBE_SECONDS = 1_600_000_001  # an odd second: FAT keeps only even ones


def probe_folder(sftp: paramiko.SFTPClient, folder: str) -> DestFacts | None:
    """the facts of folder's disk, from a probe file written there and
    removed; None when no file can be written there (nothing is assumed).
    Asked in two round trips (what needs no answer first goes out
    together), not one per question; the removes are not waited for: their
    answers are dropped by whoever reads the session next (the listing; the
    server serves them before its requests), or read as the session closes
    (wire.settle)."""
    tag = uuid.uuid4().hex[:8]
    base = folder.rstrip("/")
    path, odd = f"{base}/{TEMP_MARK}probe-Ab-{tag}", f"{base}/{TEMP_MARK}probe-{tag}-a:b"
    link = f"{base}/{TEMP_MARK}link-{tag}"
    replies = _Replies(sftp)
    opened = [replies.ask(CMD_OPEN, p, OPEN_WRITE, _private()) for p in (path, odd)]
    linked = replies.ask(CMD_SYMLINK, "target", link)  # paramiko's order, which OpenSSH reads
    handle, odd_handle = (_handle_of(*replies.wait(num)) for num in opened)
    symlinks = _ok(*replies.wait(linked))
    try:
        if handle is None:
            if odd_handle is not None:
                replies.wait(replies.ask(CMD_CLOSE, odd_handle))
            return None
        times = SFTPAttributes()
        times.st_atime = times.st_mtime = PROBE_SECONDS
        # one handle's requests are served in order: the times set, then read back
        set_num, stat_num, close_num = (replies.ask(CMD_FSETSTAT, handle, times), replies.ask(CMD_FSTAT, handle),
                                        replies.ask(CMD_CLOSE, handle))
        variant = replies.ask(CMD_LSTAT, path.replace("probe-Ab-", "probe-aB-"))
        closing = [replies.ask(CMD_CLOSE, odd_handle)] if odd_handle is not None else []
        set_ok, (t, msg) = _ok(*replies.wait(set_num)), replies.wait(stat_num)
        kept = SFTPAttributes._from_msg(msg).st_mtime if t == CMD_ATTRS else None
        replies.wait(close_num)
        case_insensitive = replies.wait(variant)[0] == CMD_ATTRS
        for num in closing:
            replies.wait(num)
        # a server without FSETSTAT: by path, as before
        precision = (SECOND if kept == PROBE_SECONDS else 2 * SECOND) if set_ok else _precision(sftp, path)
    finally:
        gone = [p for p, made in ((path, handle), (odd, odd_handle), (link, symlinks)) if made]
        for p in gone:
            sftp._async_request(_UNDONE, CMD_REMOVE, p)  # removed, or left for the tidy-up (temp names)
        sftp.owed = bool(gone)  # read before the session closes, if no one has by then (wire.settle)
    windows_names = odd_handle is None
    fat_like = windows_names and not symlinks  # exFAT or FAT: NTFS (ntfs-3g) holds symlinks
    return DestFacts(
        fs_type=SERVER_DISK if windows_names or case_insensitive else "",
        mtime_precision_ns=precision,
        case_insensitive=case_insensitive,
        symlinks=symlinks,
        windows_names=windows_names,
        max_file_size=None,  # FAT32's 4 GiB cannot be told from exFAT's none without writing 4 GiB
        mtime_min_ns=FAT_EPOCH_NS if fat_like else None,
        mtime_max_ns=FAT_END_NS if fat_like else None,
    )


def _private() -> SFTPAttributes:
    attrs = SFTPAttributes()
    attrs.st_mode = TEMP_MODE
    return attrs


def _handle_of(t: int, msg: paramiko.Message) -> bytes | None:
    return msg.get_binary() if t == CMD_HANDLE else None


def _precision(sftp: paramiko.SFTPClient, path: str) -> int:
    """SFTP carries whole seconds: 1 s, or 2 s where an odd second is not kept (FAT)."""
    try:
        sftp.utime(path, (PROBE_SECONDS, PROBE_SECONDS))
        kept = sftp.stat(path).st_mtime
    except OSError:
        return SECOND
    return SECOND if kept == PROBE_SECONDS else 2 * SECOND
