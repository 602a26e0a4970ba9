"""restore's fetch: each item downloaded into its temp file (resumed from a
killed run's), checked against its hash, then renamed into place; the remote's
folders made; stale temp files removed."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from reconcile import safepath
from reconcile.entry import DIR, FILE, Entry, is_inside
from reconcile.errors import ReconcileError, Transient
from reconcile.hashing import FileHasher
from reconcile.remotes.local import current_umask, final_mode
from reconcile.remotes.retry import RetryPolicy
from reconcile.restore_model import CORRUPT_SUFFIX, RESTORE_TEMP, Item, RestoreReporter, stem_of, temp_name
from reconcile.restore_survey import blocked, file_in_way, ours, way_message

def open_partial(p: safepath.Parent, name: str, limit: int) -> tuple[int, int]:
    """(fd, bytes in it) of our temp file: what a killed run left, resumed from
    its size, or a new empty one. Never follows a symlink planted at the name,
    never appends to a file that is not ours: that one is removed."""
    try:
        fd = safepath.open_file(p, name, os.O_RDWR)
    except FileNotFoundError:
        return safepath.create_exclusive(p, name), 0
    except OSError:  # a symlink (ELOOP) or something we cannot open: not ours
        fd = None
    if fd is not None:
        st = os.fstat(fd)
        if ours(st) and st.st_size <= limit:
            return fd, st.st_size
        os.close(fd)
    os.unlink(p.of(name), dir_fd=p.fd)
    return safepath.create_exclusive(p, name), 0


# --- fetching --------------------------------------------------------------------

class Fetcher:
    """downloads items in parallel; each lands verified or is kept aside"""

    def __init__(self, remote, policy: RetryPolicy, root: str, reporter: RestoreReporter, transfers: int) -> None:
        self.remote = remote
        self.policy = policy
        self.root = root
        self.reporter = reporter
        self.transfers = max(1, transfers)
        self.remote_gone: str | None = None
        self._lock = threading.Lock()
        self._stop = False

    def run(self, items: list[Item]) -> None:
        it = iter(items)

        def worker() -> None:
            while self.remote_gone is None and not self._stop:
                with self._lock:
                    item = next(it, None)
                if item is None:
                    return
                self.one(item)

        with ThreadPoolExecutor(self.transfers) as pool:
            futures = [pool.submit(worker) for _ in range(min(self.transfers, len(items)))]
            try:
                for f in futures:
                    f.result()
            except BaseException:
                self._stop = True  # ctrl-c: finish the files in flight, start no more
                raise

    def one(self, item: Item) -> None:
        try:
            self._fetch(item)
        except Transient as exc:
            item.result, item.error = "partial", str(exc)  # its temp file stays for the next run
            self.remote_gone = str(exc)
        except (ReconcileError, OSError) as exc:
            item.result = "failed"
            item.error = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        self.reporter.ended(item)

    def _fetch(self, item: Item) -> None:
        """into a temp file in the target's folder (reached without following a
        symlink), verified, then renamed to its name"""
        with self._parent(item.rel) as parent:
            tmp = item.temp or temp_name(item.rel, item.entry)
            fd, item.partial = open_partial(parent, tmp, item.entry.size)
            try:
                with os.fdopen(fd, "r+b") as out:
                    self._fill(item, out)
                    self._land(item, out, parent, tmp)
            except Transient:
                raise  # the temp file stays: the next run resumes it
            except (ReconcileError, OSError):
                _unlink(parent, tmp)
                raise

    def _parent(self, rel: str) -> safepath.Parent:
        try:
            return safepath.open_parent(self.root, rel, create=True)
        except (FileExistsError, NotADirectoryError, safepath.SymlinkInPath):
            # a local file or symlink stands where a folder must go
            way = file_in_way(self.root, rel.rpartition("/")[0])
            if way is None:
                raise
            raise ReconcileError(way_message("", way)) from None

    def _fill(self, item: Item, out) -> None:
        got = self._download(item, out)
        item.expect = item.expect or got.hash
        actual = _hash_open(out, item.entry.size) if item.expect is not None else None
        if actual != item.expect and item.partial:
            # the part a killed run left may be what is wrong: once more, whole
            out.truncate(0)
            item.partial = 0
            self._download(item, out)
            actual = _hash_open(out, item.entry.size)
        if item.expect is not None and actual is not None:
            item.verified = actual == item.expect
            item.actual = actual

    def _download(self, item: Item, out) -> Entry:
        e = item.entry
        if _flushed_size(out) == e.size:
            got = Entry(e.path, FILE, e.size, e.mtime_ns)  # a killed run fetched it all
        else:
            got = self.policy.run(lambda: self.remote.download(
                item.remote_path, out, self._progress(item), offset=_flushed_size(out), limit=e.size),
                f"download {item.remote_path}")
        if got.size != e.size or _flushed_size(out) != e.size or \
                (got.mtime_ns is not None and e.mtime_ns is not None and got.mtime_ns != e.mtime_ns):
            raise ReconcileError("it changed on the remote while it was fetched; run again")
        return got

    def _progress(self, item: Item) -> Callable[[int], None]:
        def count(n: int) -> None:
            item.fetched += n
            self.reporter.received(n)
        return count

    def _land(self, item: Item, out, parent: safepath.Parent, tmp: str) -> None:
        target = parent.target
        if item.expect is not None and item.actual is not None and not item.verified:
            os.replace(parent.of(tmp), parent.of(parent.name + CORRUPT_SUFFIX),
                       src_dir_fd=parent.fd, dst_dir_fd=parent.fd)
            item.result = "corrupt"
            item.error = (f"its xxh3 is {item.actual.hex()} but the remote recorded {item.expect.hex()}; "
                          f"kept aside as {os.path.basename(target)}{CORRUPT_SUFFIX}, not put in place")
            return
        os.fsync(out.fileno())
        if item.entry.mtime_ns is not None:
            os.utime(out.fileno(), ns=(item.entry.mtime_ns, item.entry.mtime_ns))
        os.chmod(out.fileno(), final_mode(item.entry.mode if item.entry.kind == FILE else None, False, _UMASK))
        if item.reason == "missing" and _exists(parent, parent.name):
            _unlink(parent, tmp)
            item.result, item.error = "failed", "a local file appeared meanwhile; it was left alone"
            return
        os.replace(parent.of(tmp), target, src_dir_fd=parent.fd, dst_dir_fd=parent.fd)
        item.result = "done"


_UMASK = current_umask()


def _flushed_size(out) -> int:
    out.flush()
    return os.fstat(out.fileno()).st_size


def _hash_open(out, size: int) -> bytes | None:
    out.flush()
    return FileHasher(out.fileno(), size).digest()


def _unlink(p: safepath.Parent, name: str) -> None:
    try:
        os.unlink(p.of(name), dir_fd=p.fd)
    except OSError:
        pass


def _exists(p: safepath.Parent, name: str) -> bool:
    try:
        os.lstat(p.of(name), dir_fd=p.fd)
    except FileNotFoundError:
        return False
    return True


def make_dirs(root: str, dirs: list[str]) -> list[Item]:
    """the remote's folders; one that cannot be made is a failed item, not the end"""
    failed = []
    for rel in dirs:
        try:
            made = safepath.open_dir(root, rel, create=True)
            if isinstance(made, int):
                os.close(made)
        except OSError as exc:
            way = file_in_way(root, rel)
            error = way_message(rel, way) if way else (exc.strerror or str(exc))
            failed.append(blocked(rel, Entry(rel, DIR), "file" if way else "", error))
    return failed


def remove_stale_temps(root: str, items: list[Item], current: set[str], paths: list[str]) -> int:
    """after a complete run: partial files of versions the remote no longer has.
    only for paths this restore covers: another file's partial stays resumable"""
    count = 0
    for head in {i.rel.rpartition("/")[0] for i in items}:
        try:
            with safepath.open_parent(root, f"{head}/x" if head else "x") as d:
                names = [n for n in os.listdir(d.fd if d.fd is not None else d.dirpath)
                         if RESTORE_TEMP.match(n)]
                for name in names:
                    owner = f"{head}/{RESTORE_TEMP.sub('', name, 1)}" if head else RESTORE_TEMP.sub("", name, 1)
                    stem = f"{head}/{stem_of(name)}" if head else stem_of(name)
                    if stem in current or (paths and not any(is_inside(owner, p) for p in paths)):
                        continue
                    _unlink(d, name)
                    count += 1
        except OSError:
            continue
    return count
