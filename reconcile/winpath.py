"""Windows paths, as strings: drive letters, UNC shares, file:// URLs, the
\\\\?\\ prefix for paths over 260 characters, and locked files.

Pure functions of their arguments (windows= says which rules apply), so the
Windows rules are tested on any machine; callers pass portable.WINDOWS.
"""

from __future__ import annotations

import ntpath
import re
import time
from typing import Callable
from urllib.parse import unquote, urlsplit

DRIVE = re.compile(r"[A-Za-z]:([\\/]|$)")  # C:\backup, C:/backup, C:
MAX_PATH = 260  # with its NUL: a longer path needs the \\?\ prefix (unless long paths are enabled)
LONG = "\\\\?\\"
# another program has the file open without sharing it (Outlook's .pst, a
# database), or holds a byte-range lock; antivirus scanners do so briefly
ERROR_SHARING_VIOLATION, ERROR_LOCK_VIOLATION = 32, 33
LOCKED_RETRIES = (0.25, 0.5, 1.0)  # seconds between the tries: a scan ends, a real lock stays


def is_drive_path(path: str) -> bool:
    return bool(DRIVE.match(path))


def is_unc(path: str) -> bool:
    r"""\\server\share\... (or //server/share), not the \\?\ and \\.\ device forms"""
    p = path.replace("/", "\\")
    return p.startswith("\\\\") and not p.startswith(("\\\\?\\", "\\\\.\\")) and len(p) > 2 and p[2] != "\\"


def file_url_path(url: str, windows: bool) -> str | None:
    r"""the folder a file:// URL names: file:///C:/Users/me -> C:\Users\me,
    file://nas/share/x and file:////nas/share/x -> \\nas\share\x on Windows;
    file:///path elsewhere. None: it names a host where there are no UNC shares."""
    parts = urlsplit(url)
    path = unquote(parts.path, errors="surrogateescape")
    host = parts.netloc if parts.netloc.lower() != "localhost" else ""
    if not windows:
        return None if host else path
    if host:
        return ntpath.normpath(f"\\\\{host}{path}")
    if re.match(r"/[A-Za-z]:([/\\]|$)", path):
        path = path[1:]
    return ntpath.normpath(path)  # file:////server/share: //server/share, a UNC path already


def long_path(path: str) -> str:
    r"""an absolute Windows path in the \\?\ form, which has no 260-character
    limit (nor any rewriting: no '/', '.' or '..' may be left in it, so it is
    normalised first). Given once to the root, every path joined below it is
    long-path safe whatever the registry's LongPathsEnabled says."""
    if path.startswith(LONG) or path.startswith("\\\\.\\"):
        return path
    if is_unc(path):
        return LONG + "UNC\\" + ntpath.normpath(path)[2:]
    if is_drive_path(path):
        return LONG + ntpath.normpath(path)
    return path  # relative, or not a Windows path at all: unchanged


def display(path: str) -> str:
    r"""the path as a user writes it: without \\?\ (or \\?\UNC\)"""
    if path.startswith(LONG + "UNC\\"):
        return "\\\\" + path[len(LONG) + 4:]
    if path.startswith(LONG):
        return path[len(LONG):]
    return path


def is_locked(exc: BaseException) -> bool:
    """an error that says another program holds the file (Windows only:
    POSIX has advisory locks, which never stop a read)"""
    return getattr(exc, "winerror", None) in (ERROR_SHARING_VIOLATION, ERROR_LOCK_VIOLATION)


def locked(path: str, open_file: Callable = open, sleep: Callable[[float], None] = time.sleep) -> bool:
    """True when path stays locked by another program through a few brief
    retries (a virus scan lets go, Outlook does not). Any other error is for
    the upload to meet and report: False."""
    for pause in LOCKED_RETRIES + (None,):
        try:
            open_file(path, "rb").close()
            return False
        except OSError as exc:
            if not is_locked(exc):
                return False
        if pause is None:
            return True
        sleep(pause)
    return True
