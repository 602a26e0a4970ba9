"""Paths under a root that never follow a symlink below the root.

Someone who can write the destination (a shared NAS folder) or the restore
target may swap a folder for a symlink between our listing and our write. So
every folder below the root is opened one name at a time, relative to its
parent's descriptor, with O_NOFOLLOW|O_DIRECTORY; the final name is then used
with dir_fd (unlink, rename, mkdir, open with O_NOFOLLOW). A symlink anywhere
below the root fails with ELOOP/ENOTDIR instead of being followed: the same
construction rsync adopted for CVE-2024-12747. The root itself is the folder
the user named and is followed as given.

Where the OS has no dir_fd (Windows; portable.DIR_FD), the twin walks joined
paths and looks at each folder below the root (lstat) before using it: a
symlink, a junction or a mount-point reparse point is refused, as the fd walk
refuses it. What the twin guarantees is less: a link present when we look is
never followed, but one swapped in between our look and our use (a window of
microseconds, by someone who can already write the destination) could be.
A file's own name is checked the same way (open_file: lstat, open, then the
open file must be the one lstat saw), and new files are made O_EXCL, which
never follows a link at their name on any OS.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Callable

from reconcile import portable

DIR_FD = portable.DIR_FD
NOFOLLOW = portable.NOFOLLOW
DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
# Windows reparse tags that redirect a path (os.lstat does not follow them)
IO_REPARSE_TAG_MOUNT_POINT = 0xA0000003  # junctions and mounted volumes
IO_REPARSE_TAG_SYMLINK = 0xA000000C

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
        return Parent(None, _checked_dirs(root, parts, create, dir_mode), name)
    fd = _open_root(root, create, dir_mode)
    for i, part in enumerate(parts):
        fd = _step(fd, part, create, dir_mode, "/".join(parts[:i + 1]))  # closes the fd it is given
    return Parent(fd, "", name)


def open_dir(root: str, rel: str, create: bool = False, dir_mode: int = 0o777) -> int | str:
    """rel itself as an open folder (an fd), or its joined path where the OS
    has no dir_fd. The caller closes an fd."""
    if not rel:
        return _open_root(root, create, dir_mode) if DIR_FD else root
    if not DIR_FD:
        return _checked_dirs(root, rel.split("/"), create, dir_mode)
    with open_parent(root, rel, create, dir_mode) as p:
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


def _checked_dirs(root: str, parts: list[str], create: bool, dir_mode: int) -> str:
    """the twin of the fd walk, where there is no dir_fd: root joined with
    parts, each folder below the root looked at before it is used"""
    portable.used["checked_dirs"] += 1
    if create:
        os.makedirs(root, dir_mode, exist_ok=True)
    elif not os.path.isdir(root):
        os.stat(root)  # FileNotFoundError, as opening it would be
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), root)
    path = root
    for i, part in enumerate(parts):
        rel = "/".join(parts[:i + 1])
        if before_open is not None:
            before_open(rel)
        path = os.path.join(path, part)
        try:
            s = os.lstat(path)
        except FileNotFoundError:
            if not create:
                raise
            try:
                os.mkdir(path, dir_mode)
            except FileExistsError:
                pass  # made meanwhile: looked at below like any other
            s = os.lstat(path)
        if is_link(s):
            raise SymlinkInPath(errno.ELOOP, f"{rel} is a symlink; reconcile never follows a symlink "
                                "inside the destination or restore folder", rel)
        if not stat.S_ISDIR(s.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
    return path


def is_link(s: os.stat_result) -> bool:
    """an lstat result that redirects a path: a symlink, or on Windows a
    junction or mount point (other reparse points, OneDrive's placeholders,
    dedup, are plain files and folders)"""
    tag = getattr(s, "st_reparse_tag", 0)
    return stat.S_ISLNK(s.st_mode) or tag in (IO_REPARSE_TAG_MOUNT_POINT, IO_REPARSE_TAG_SYMLINK)


def _is_link(parent: int, part: str) -> bool:
    try:
        os.readlink(part, dir_fd=parent)
        return True
    except OSError:
        return False


def open_file(p: Parent, name: str, flags: int) -> int:
    """an existing file under p, opened without following a symlink at its name"""
    flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    if p.fd is not None and NOFOLLOW:
        return os.open(p.of(name), flags | NOFOLLOW, dir_fd=p.fd)
    # the twin: look, open, and check the open file is the one we looked at
    portable.used["open_file"] += 1
    path = p.of(name)
    before = os.lstat(path, dir_fd=p.fd)
    if is_link(before):
        raise OSError(errno.ELOOP, "is a symlink; reconcile never follows one", path)
    fd = os.open(path, flags, dir_fd=p.fd)
    after = os.fstat(fd)
    if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
        os.close(fd)
        raise OSError(errno.ELOOP, "was replaced while being opened; reconcile never follows a symlink", path)
    return fd


def create_exclusive(p: Parent, name: str, mode: int = 0o600) -> int:
    """a new file, never an existing one nor through a symlink planted at its name"""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | NOFOLLOW
    flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    return os.open(p.of(name), flags, mode, dir_fd=p.fd)
