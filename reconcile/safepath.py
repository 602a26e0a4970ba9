"""Paths under a root that never follow a symlink below the root.

Someone who can write the destination (a shared NAS folder) or the restore
target may swap a folder for a symlink between our listing and our write. So
every folder below the root is opened one name at a time, relative to its
parent's descriptor, with O_NOFOLLOW|O_DIRECTORY; the final name is then used
with dir_fd (unlink, rename, mkdir, open with O_NOFOLLOW). A symlink anywhere
below the root fails with ELOOP/ENOTDIR instead of being followed: the same
construction rsync adopted for CVE-2024-12747. The root itself is the folder
the user named and is followed as given.

Where the OS has no dir_fd (Windows), Parent falls back to joined paths.
"""

from __future__ import annotations

import errno
import os
from typing import Callable

DIR_FD = {os.open, os.mkdir, os.rename, os.unlink, os.rmdir, os.stat} <= os.supports_dir_fd
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | NOFOLLOW | getattr(os, "O_CLOEXEC", 0)

# a test-only hook: called with each name before its folder is opened, so a
# test can swap a folder for a symlink at the worst moment
before_open: Callable[[str], None] | None = None


class SymlinkInPath(OSError):
    """a folder below the root is a symlink (or not a folder): never followed"""


class Parent:
    """the folder holding a path's last name, opened without following
    symlinks. Use p.of(name) with dir_fd=p.fd in os calls; p.target is the
    last name itself. A context manager that closes the folder."""

    def __init__(self, fd: int | None, dirpath: str, name: str) -> None:
        self.fd = fd
        self.dirpath = dirpath  # only where the OS has no dir_fd
        self.name = name

    def of(self, name: str) -> str:
        return name if self.fd is not None else os.path.join(self.dirpath, name)

    @property
    def target(self) -> str:
        return self.of(self.name)

    def __enter__(self) -> "Parent":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def open_parent(root: str, rel: str, create: bool = False, dir_mode: int = 0o777) -> Parent:
    """the parent folder of rel (a '/'-separated path under root). create:
    make missing folders on the way (as makedirs, never through a symlink)."""
    head, _, name = rel.rpartition("/")
    parts = head.split("/") if head else []
    if not DIR_FD:
        path = os.path.join(root, *parts)
        if create:
            os.makedirs(path, dir_mode, exist_ok=True)
        return Parent(None, path, name)
    fd = _open_root(root, create, dir_mode)
    for i, part in enumerate(parts):
        fd = _step(fd, part, create, dir_mode, "/".join(parts[:i + 1]))  # closes the fd it is given
    return Parent(fd, "", name)


def open_dir(root: str, rel: str, create: bool = False, dir_mode: int = 0o777) -> int | str:
    """rel itself as an open folder (an fd), or its joined path where the OS
    has no dir_fd. The caller closes an fd."""
    if not rel:
        return _open_root(root, create, dir_mode) if DIR_FD else root
    with open_parent(root, rel, create, dir_mode) as p:
        if p.fd is None:
            if create:
                os.makedirs(p.target, dir_mode, exist_ok=True)
            return p.target
        fd, p.fd = p.fd, None
    return _step(fd, p.name, create, dir_mode, rel)


def _open_root(root: str, create: bool, dir_mode: int) -> int:
    """the root the user named, followed as given (made if missing and create)"""
    try:
        return os.open(root, DIR_FLAGS & ~NOFOLLOW)
    except FileNotFoundError:
        if not create:
            raise
    os.makedirs(root, dir_mode, exist_ok=True)
    return os.open(root, DIR_FLAGS & ~NOFOLLOW)


def _step(parent: int, part: str, create: bool, dir_mode: int, rel: str) -> int:
    """open part below parent (closing parent), never through a symlink"""
    try:
        if before_open is not None:
            before_open(rel)
        try:
            return os.open(part, DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
        try:
            os.mkdir(part, dir_mode, dir_fd=parent)
        except FileExistsError:
            pass  # made meanwhile (another thread): open it below, never following
        return os.open(part, DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK) and _is_link(parent, part):
            raise SymlinkInPath(errno.ELOOP, f"{rel} is a symlink; reconcile never follows a symlink "
                                "inside the destination or restore folder", rel) from None
        raise
    finally:
        os.close(parent)


def _is_link(parent: int, part: str) -> bool:
    try:
        os.readlink(part, dir_fd=parent)
        return True
    except OSError:
        return False


def create_exclusive(p: Parent, name: str, mode: int = 0o600) -> int:
    """a new file, never an existing one nor through a symlink planted at its name"""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | NOFOLLOW
    flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    return os.open(p.of(name), flags, mode, dir_fd=p.fd)
