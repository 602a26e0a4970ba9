"""reconcile watch: runs as changes happen (loop.py), from file events
(inotify.py on Linux, portable.py through watchdog elsewhere)."""

from __future__ import annotations

import os
from typing import Callable


def open_watcher(root: str, skip: Callable[[str, bool], bool]):
    """the platform's watcher; RECONCILE_WATCHER=watchdog picks watchdog on Linux too"""
    from reconcile.watch import inotify

    if inotify.available() and os.environ.get("RECONCILE_WATCHER") != "watchdog":
        return inotify.InotifyWatcher(root, skip)
    from reconcile.watch.portable import PortableWatcher

    return PortableWatcher(root, skip)
