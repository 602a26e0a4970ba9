"""Private files in the state folder: mode 0600, replaced atomically."""

from __future__ import annotations

import os
from typing import BinaryIO

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def open_private(path: str, mode: str = "wb") -> BinaryIO:
    # never through a symlink someone left at the name
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0) | NOFOLLOW
    flags |= os.O_APPEND if "a" in mode else os.O_TRUNC
    fd = os.open(path, flags, 0o600)
    try:
        os.chmod(fd if os.chmod in os.supports_fd else path, 0o600)  # an older file may have looser bits
    except OSError:
        pass
    return os.fdopen(fd, mode)


def open_read(path: str) -> BinaryIO:
    """a state file to read, never through a symlink"""
    return os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0) | NOFOLLOW), "rb")


def atomic_replace(tmp: str, path: str) -> None:
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")


def fsync_dir(path: str) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open_private(tmp) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    atomic_replace(tmp, path)
