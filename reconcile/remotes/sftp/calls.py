"""Small helpers over one SFTPClient's public API, the entries its attributes
give, and the names of temp files."""

from __future__ import annotations

import errno
import re
import stat as st

from reconcile.entry import DIR, FILE, LINK, TEMP_MARK, Entry, decode_path, parent_of, temp_tail as _short
from reconcile.remotes.sftp.loader import paramiko
from paramiko.sftp_attr import SFTPAttributes

MAX_MTIME = (1 << 32) - 1  # SFTP v3 carries mtime as uint32 seconds


def _readlink(sftp: paramiko.SFTPClient, path: bytes) -> str | None:
    try:
        target = sftp.readlink(path)
    except OSError:
        return None
    return decode_path(target) if isinstance(target, bytes) else target


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


def is_temp_of(tmp: object, path: str) -> bool:
    """tmp is a temp name _temp_for could have given path (in its folder):
    a journal's resume record is checked, never trusted as a path"""
    if not isinstance(tmp, str) or parent_of(tmp) != parent_of(path):
        return False
    pattern = re.escape(TEMP_MARK) + r"[0-9a-f]{16}-" + re.escape(_short(_name(path)))
    return re.fullmatch(pattern, _name(tmp)) is not None
