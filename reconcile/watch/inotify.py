"""A small inotify reader (Linux): one watch per folder of the tree.

Why not watchdog here: its inotify observer logs and skips a folder it cannot
watch (max_user_watches) without telling its caller which subtree went
unwatched, rebuilds every watch itself after a queue overflow, and keeps a
node tree plus a thread per observer. Here every loss is reported to the
caller as a path to rescan: the queue overflowed (IN_Q_OVERFLOW: the root),
a folder could not be watched (that folder, also kept in `unwatched` for the
timer), a read failed (the root).

Nothing here decides when to run: read() turns the kernel's events into
Change records and the caller marks them dirty.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import struct
import sys
import time
from typing import Callable

from reconcile.watch.changes import Change

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF = 0x400, 0x800
IN_UNMOUNT, IN_Q_OVERFLOW, IN_IGNORED = 0x2000, 0x4000, 0x8000
IN_ONLYDIR, IN_DONT_FOLLOW, IN_EXCL_UNLINK, IN_ISDIR = 0x01000000, 0x02000000, 0x04000000, 0x40000000
IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000

MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
        | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK)
HEADER = struct.Struct("iIII")  # wd, mask, cookie, len
READ_SIZE = 1 << 18
LIMIT_ERRORS = (errno.ENOSPC, errno.EMFILE, errno.ENOMEM)  # out of watches (max_user_watches) or memory


def available() -> bool:
    return hasattr(os, "uname") and os.uname().sysname == "Linux"


def _libc():
    if not sys.platform.startswith("linux"):  # CDLL(None) is POSIX's; inotify is Linux's
        raise OSError(errno.ENOSYS, "inotify is Linux only")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


class InotifyWatcher:
    """watches root and every folder under it that skip(path, True) keeps."""

    reports_close = True  # IN_CLOSE_WRITE: a file still open for writing holds the run

    def __init__(self, root: str, skip: Callable[[str, bool], bool]) -> None:
        self.root = root
        self.root_b = os.fsencode(root)
        self.skip = skip
        self._libc = _libc()
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"cannot start inotify: {os.strerror(err)} (fs.inotify.max_user_instances?)")
        self.fd = fd
        self.path_of: dict[int, str] = {}  # wd -> folder, relative ("" is the root)
        self.wd_of: dict[str, int] = {}
        self.unwatched: dict[str, str] = {}  # folder -> why it has no watch
        self._moved_from: dict[int, list[int]] = {}  # cookie -> watches of a folder moved away, awaiting IN_MOVED_TO

    def fileno(self) -> int:
        return self.fd

    # --- watches --------------------------------------------------------------

    def watch_tree(self, rel: str = "") -> list[Change]:
        """watch rel and every folder below it; returns the losses (folders
        that could not be watched). A folder already watched keeps its wd:
        after a rename the kernel hands back the same one, now at its new path."""
        losses: list[Change] = []
        stack = [rel]
        while stack:
            folder = stack.pop()
            if not self._add(folder, losses):
                continue
            try:
                with os.scandir(self._abs(folder)) as it:
                    for e in it:
                        name = os.fsdecode(e.name)
                        child = f"{folder}/{name}" if folder else name
                        try:
                            if e.is_dir(follow_symlinks=False) and not self.skip(child, True):
                                stack.append(child)
                        except OSError:
                            continue
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                    losses.append(Change(folder, tree=True, lost=f"cannot list {folder or '.'}: {exc.strerror}"))
        return losses

    def _abs(self, rel: str) -> bytes:
        return os.path.join(self.root_b, os.fsencode(rel)) if rel else self.root_b

    def _add(self, folder: str, losses: list[Change]) -> bool:
        wd = self._libc.inotify_add_watch(self.fd, self._abs(folder), MASK)
        if wd < 0:
            err = ctypes.get_errno()
            if err in (errno.ENOENT, errno.ENOTDIR) and folder:
                return False  # gone already: its parent's event covers it
            why = f"cannot watch {folder or 'the source ' + self.root}: {os.strerror(err)}"
            if err in LIMIT_ERRORS:
                why += " (raise fs.inotify.max_user_watches; until then it is rescanned on a timer)"
            self.unwatched[folder] = why
            losses.append(Change(folder, tree=True, lost=why))
            return False
        old = self.path_of.get(wd)
        if old is not None and old != folder and self.wd_of.get(old) == wd:
            del self.wd_of[old]
        self.path_of[wd] = folder
        self.wd_of[folder] = wd
        self.unwatched.pop(folder, None)
        return True

    def _wds_below(self, folder: str) -> list[int]:
        prefix = folder + "/"
        return [wd for path, wd in self.wd_of.items() if path == folder or path.startswith(prefix)]

    def _forget(self, wds: list[int]) -> None:
        """drop the watches of a folder moved out of the tree (by wd: a new
        folder made since under the same name keeps its own)"""
        for wd in wds:
            path = self.path_of.pop(wd, None)
            if path is not None and self.wd_of.get(path) == wd:
                del self.wd_of[path]
            self._libc.inotify_rm_watch(self.fd, wd)

    def retry_unwatched(self) -> list[Change]:
        """try again the folders that had no watch; each is rescanned (the
        caller marks what this returns dirty) since events there were missed"""
        changes = []
        for folder in list(self.unwatched):
            del self.unwatched[folder]
            lost = self.watch_tree(folder)
            changes += lost or [Change(folder, tree=True)]
        return changes

    # --- events ---------------------------------------------------------------

    def read(self, timeout: float) -> list[Change]:
        """the changes of the events waiting, after at most timeout seconds"""
        try:
            ready, _, _ = select.select([self.fd], [], [], max(timeout, 0))
        except InterruptedError:
            return []
        if not ready:
            self._drop_unpaired_moves()
            return []
        try:
            data = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return []
        except OSError as exc:
            return [Change("", tree=True, lost=f"reading file events failed: {exc.strerror}")]
        return self._parse(data)

    def _parse(self, data: bytes) -> list[Change]:
        changes: list[Change] = []
        pos, end = 0, len(data)
        while pos + HEADER.size <= end:
            wd, mask, cookie, length = HEADER.unpack_from(data, pos)
            name = os.fsdecode(data[pos + HEADER.size:pos + HEADER.size + length].rstrip(b"\0"))
            pos += HEADER.size + length
            self._event(wd, mask, cookie, name, changes)
        return changes

    def _event(self, wd: int, mask: int, cookie: int, name: str, changes: list[Change]) -> None:
        if mask & IN_Q_OVERFLOW:
            # events were dropped: rescan everything, and watch folders whose creation was lost
            changes.append(Change("", tree=True, lost="the kernel's event queue overflowed "
                                                      "(fs.inotify.max_queued_events)"))
            changes += self.watch_tree("")
            return
        folder = self.path_of.get(wd)
        if folder is None:
            return  # a watch removed a moment ago
        if mask & IN_IGNORED:
            if self.wd_of.get(folder) == wd:
                del self.wd_of[folder]
            del self.path_of[wd]
            if folder == "":
                why = "the source folder went away (unmounted?); watching it again when it is back"
                self.unwatched[""] = why
                changes.append(Change("", tree=True, lost=why))
            return
        if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT):
            if folder == "":
                changes.append(Change("", tree=True))
            return  # the parent's event names it
        path = f"{folder}/{name}" if folder else name
        is_dir = bool(mask & IN_ISDIR)
        if not name or self.skip(path, is_dir):
            return
        if is_dir and mask & (IN_CREATE | IN_MOVED_TO):
            self._moved_from.pop(cookie, None)
            changes += self.watch_tree(path)  # before the run walks it: nothing slips between
            changes.append(Change(path, tree=True))
            return
        if is_dir and mask & IN_MOVED_FROM:
            self._moved_from[cookie] = self._wds_below(path)
        changes.append(Change(path, tree=is_dir, writing=bool(mask & IN_MODIFY) or bool(mask & IN_CREATE),
                              closed=bool(mask & IN_CLOSE_WRITE)))

    def _drop_unpaired_moves(self) -> None:
        """folders moved out of the tree: no IN_MOVED_TO came before the queue went quiet"""
        for cookie, wds in list(self._moved_from.items()):
            del self._moved_from[cookie]
            self._forget(wds)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def wait_any(watchers: list, timeout: float) -> None:
    """sleep until one of the watchers has events, or timeout"""
    fds = [w.fileno() for w in watchers]
    if fds:
        try:
            select.select(fds, [], [], max(timeout, 0))
        except InterruptedError:
            pass
    else:
        time.sleep(max(timeout, 0))
