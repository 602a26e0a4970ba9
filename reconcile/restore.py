"""reconcile restore: fetch a remote tree, or one run of its trash, back into a
local folder. Verified, atomic per file, resumable.

- Each file lands under a temp name in its target folder: a stem fixed by
  (path, size, mtime), so a killed restore finds and resumes it from its size
  (SFTP offset, S3 byte range), then a random part no one can guess ahead.
  It is created O_EXCL|O_NOFOLLOW (0600), and resumed only if it is our own
  regular file; no folder below the target is followed through a symlink.
- The temp file's xxh3 is checked against the hash the remote knows (S3
  metadata or record) or the pair's snapshot (--state-dir). A mismatch is
  kept aside as NAME.reconcile-corrupt, never put in place.
- An existing local file that differs is left alone unless --overwrite.
- Trash layout (written by apply's trash): <root>/<backup-dir>/<run>/<path>,
  run = UTC start time YYYY-MM-DDTHHMMSSZ.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import stat
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

from reconcile.diff import file_changed
from reconcile.entry import DIR, FILE, TEMP_MARK, Entry, encode_path, is_inside, is_safe_path
from reconcile.errors import EXIT_ERROR, EXIT_PARTIAL, ConfigError, NotFound, ReconcileError, Transient
from reconcile import safepath
from reconcile.hashing import FileHasher, hash_file
from reconcile.remotes import dest_kind, open_remote
from reconcile.remotes import local_path as local_folder_of
from reconcile.remotes.base import RemoteOptions
from reconcile.remotes.local import current_umask, final_mode
from reconcile.remotes.retry import RetryPolicy
from reconcile.shown import printable
from reconcile.statedir import display_url, private_copy
from reconcile.trash import DEFAULT_TRASH, known_trash

CORRUPT_SUFFIX = ".reconcile-corrupt"
# "r" marks our own temp names apart from an upload's (hex never holds an r)
RESTORE_TEMP = re.compile(re.escape(TEMP_MARK) + r"r[0-9a-f]{16}-")
DEFAULT_TRANSFERS = {"local": 4, "sftp": 4, "s3": 16}


@dataclass
class RestoreOptions:
    local_dir: str
    paths: list[str] = field(default_factory=list)
    overwrite: bool = False
    dry_run: bool = False
    from_trash: str | None = None
    backup_dir: str = DEFAULT_TRASH
    state_dir: str | None = None
    remote: RemoteOptions = field(default_factory=RemoteOptions)


@dataclass
class Item:
    """one remote file that has to be fetched"""

    rel: str  # where it goes, relative to the local folder
    remote_path: str  # where it is, relative to the opened remote
    entry: Entry
    reason: str  # missing | differs
    expect: bytes | None  # the xxh3 it must have, when known
    partial: int = 0  # bytes a killed run left in its temp file
    result: str = "pending"  # done | corrupt | failed | partial
    fetched: int = 0
    verified: bool = False
    actual: bytes | None = None  # the xxh3 of what was fetched
    temp: str | None = None  # the temp file a killed run left, to resume
    error: str | None = None
    blocked_by: str = ""  # file | folder: what local thing stops it


@dataclass
class Survey:
    """what a restore found: work to do and what it leaves alone"""

    todo: list[Item] = field(default_factory=list)
    identical: int = 0
    differs: list[str] = field(default_factory=list)  # left alone: no --overwrite
    blocked: list[Item] = field(default_factory=list)  # a local folder or file in the way
    dirs: list[str] = field(default_factory=list)  # remote folders missing locally
    links: int = 0


@dataclass
class Outcome:
    survey: Survey
    remote_gone: str | None = None
    seconds: float = 0.0

    def count(self, result: str) -> int:
        return sum(1 for i in self.survey.todo + self.survey.blocked if i.result == result)

    @property
    def unverified(self) -> int:
        return sum(1 for i in self.survey.todo if i.result == "done" and not i.verified)


# --- urls and names ----------------------------------------------------------

def child_url(url: str, sub: str) -> str:
    """the URL of a folder below url, in that URL's own spelling"""
    kind = dest_kind(url)
    if kind == "local" and not url.startswith("file://"):
        return os.path.join(os.path.expanduser(url), *sub.split("/"))
    parts = urlsplit(url)
    if kind == "s3":  # keys are taken as written, never percent-decoded
        return url.rstrip("/") + "/" + sub
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + quote(sub)))


def clean_rel(text: str, what: str) -> str:
    rel = text.strip().strip("/")
    if not rel or any(p in ("", ".", "..") for p in rel.split("/")):
        raise ConfigError(f"{what} {text!r} must be a relative path inside the remote, without '..'")
    return rel


def temp_stem(rel: str, e: Entry) -> str:
    """the part of a temp name fixed by (path, size, mtime): a rerun finds a
    killed run's partial file by it"""
    tag = hashlib.sha256(encode_path(f"{rel}\0{e.size}\0{e.mtime_ns}")).hexdigest()[:8]
    return f"{TEMP_MARK}r{tag}"


def temp_name(rel: str, e: Entry) -> str:
    """a new temp name: its stem, then a random part no one can guess ahead"""
    return f"{temp_stem(rel, e)}{secrets.token_hex(4)}-{_short(rel)}"


def _short(rel: str) -> str:
    return encode_path(rel.rsplit("/", 1)[-1])[:100].decode("utf-8", "surrogateescape")


def _stem_of(name: str) -> str:
    return name[:len(TEMP_MARK) + 9]


def is_temp_of(name: str, rel: str, e: Entry) -> bool:
    stem = temp_stem(rel, e)
    rest = name[len(stem):] if name.startswith(stem) else ""
    return re.fullmatch(r"[0-9a-f]{8}-" + re.escape(_short(rel)), rest) is not None


def local_path(root: str, rel: str) -> str:
    return os.path.join(root, *rel.split("/"))


def safe_rel(rel: str) -> bool:
    # a listing is trusted for names, but never to climb out of the folder
    return is_safe_path(rel)  # also no NUL, which no local file name can hold


def shown(path: str) -> str:
    return printable(path)


# --- listing -----------------------------------------------------------------

def trash_runs(entries: Iterable[Entry]) -> dict[str, list[int]]:
    """run folder -> [files, bytes], in name order (so in time order)"""
    runs: dict[str, list[int]] = {}
    for e in entries:
        run, sep, _ = e.path.partition("/")
        if not sep:
            if e.kind == DIR:
                runs.setdefault(run, [0, 0])
            continue
        if e.kind == FILE:
            r = runs.setdefault(run, [0, 0])
            r[0] += 1
            r[1] += e.size
    return dict(sorted(runs.items()))


def pick_run(runs: dict[str, list[int]], wanted: str) -> str:
    if wanted in runs:
        return wanted
    found = [r for r in runs if r.startswith(wanted)]
    if len(found) == 1:
        return found[0]
    if not found:
        have = ", ".join(runs) or "none"
        raise ConfigError(f"no trash run matches {wanted!r} (runs: {have}); see --list-trash")
    raise ConfigError(f"{wanted!r} matches {len(found)} trash runs: {', '.join(found)}; give more of the name")


def select(entries: Iterable[Entry], paths: list[str], skip: list[str],
           strip: str | None) -> Iterator[tuple[str, Entry]]:
    """(local rel path, entry) for what the restore covers"""
    for e in entries:
        rel = e.path
        if strip is not None:
            if not rel.startswith(strip + "/"):
                continue
            rel = rel[len(strip) + 1:]
        elif any(is_inside(rel, t) for t in skip):
            continue  # the trash is restored only with --from-trash
        if paths and not any(is_inside(rel, p) for p in paths):
            continue
        yield rel, e


# --- known hashes --------------------------------------------------------------

def snapshot_hashes(state_dir: str, wanted: set[str], warn: Callable[[str], None]) -> dict[str, Entry]:
    """entries with a hash from the pair's snapshot, for files the remote has none for"""
    from reconcile import snapshot

    path = os.path.join(os.path.abspath(os.path.expanduser(state_dir)), "snapshot.msgpack")
    if not os.path.exists(path):
        warn(f"no snapshot in {state_dir}; files without a hash on the remote are checked by size only")
        return {}
    try:
        snapshot.verify(path)
        snapshot.read_header(path)
        return {e.path: e for e in snapshot.read_entries(path)
                if e.kind == FILE and e.hash is not None and e.path in wanted}
    except (snapshot.CorruptState, OSError, ValueError) as exc:
        warn(f"ignoring the snapshot in {state_dir} ({exc}); files are checked by size only")
        return {}


def expected_hash(e: Entry, snap: Entry | None, precision: int) -> bytes | None:
    if e.hash is not None:
        return e.hash
    # the snapshot vouches only for the very version the remote lists; with no
    # remote mtime (another tool wrote it) the size alone cannot tell
    if snap is not None and e.mtime_ns is not None and not file_changed(snap, e, precision):
        return snap.hash
    return None


# --- comparing with the local folder -------------------------------------------

def survey(pairs: list[tuple[str, Entry]], root: str, snaps: dict[str, Entry], precision: int,
           overwrite: bool) -> Survey:
    s = Survey()
    temps = TempIndex(root)
    for rel, e in pairs:
        if e.kind == DIR:
            _survey_dir(s, rel, e, root)
        elif e.kind == FILE:
            _survey_file(s, rel, e, root, expected_hash(e, snaps.get(rel), precision), precision, overwrite, temps)
        else:
            s.links += 1
    return s


def _survey_dir(s: Survey, rel: str, e: Entry, root: str) -> None:
    if _is_real_dir(local_path(root, rel)):
        return
    way = file_in_way(root, rel)
    if way is None:
        s.dirs.append(rel)
    else:
        s.blocked.append(blocked(rel, e, "file", way_message(rel, way)))


def _survey_file(s: Survey, rel: str, e: Entry, root: str, expect: bytes | None, precision: int,
                 overwrite: bool, temps: "TempIndex") -> None:
    target = local_path(root, rel)
    try:
        st = _lstat_below(root, rel)
    except FileNotFoundError:
        s.todo.append(_item(rel, e, "missing", expect, root, temps))
        return
    except (NotADirectoryError, safepath.SymlinkInPath):  # a local file or link where the remote has a folder
        head = rel.rpartition("/")[0]
        way = file_in_way(root, head) or head
        s.blocked.append(blocked(rel, e, "file", way_message(rel, way)))
        return
    if stat.S_ISDIR(st.st_mode):
        s.blocked.append(blocked(rel, e, "folder", "a local folder is in the way; move it, then run again"))
        return
    if stat.S_ISREG(st.st_mode) and _same(e, st, target, expect, precision):
        s.identical += 1
    elif overwrite:
        s.todo.append(_item(rel, e, "differs", expect, root, temps))
    else:
        s.differs.append(rel)


def blocked(rel: str, e: Entry, by: str, error: str) -> Item:
    """a path the restore cannot write: reported, counted as failed, the rest goes on"""
    item = Item(rel, e.path, e, "blocked", None, result="failed", error=error)
    item.blocked_by = by
    return item


def file_in_way(root: str, rel: str) -> str | None:
    """the first part of rel that exists locally but is not a folder (a
    symlink to a folder included: restore never writes through one)"""
    parts = rel.split("/") if rel else []
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        path = local_path(root, sub)
        if not _is_real_dir(path):
            return sub if os.path.lexists(path) else None
    return None


def _is_real_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _lstat_below(root: str, rel: str) -> os.stat_result:
    """lstat of root/rel, never through a symlinked folder (SymlinkInPath)"""
    with safepath.open_parent(root, rel) as p:
        return os.lstat(p.target, dir_fd=p.fd)


def way_message(rel: str, way: str) -> str:
    if way == rel:
        return "a local file (or symlink) stands where the remote has this folder; move it, then run again"
    return (f"the local file (or symlink) {shown(way)} stands where the remote has a folder; "
            "move it, then run again")


def _same(e: Entry, st: os.stat_result, target: str, expect: bytes | None, precision: int) -> bool:
    if st.st_size != e.size:
        return False
    # size alone proves nothing: an unknown remote mtime needs the hash
    local = Entry(e.path, FILE, st.st_size, st.st_mtime_ns)
    if e.mtime_ns is not None and not file_changed(e, local, precision):
        return True
    if expect is None:
        return False
    try:
        return hash_file(target) == expect  # same bytes, another mtime
    except (OSError, ReconcileError):
        return False


def _item(rel: str, e: Entry, reason: str, expect: bytes | None, root: str, temps: "TempIndex") -> Item:
    item = Item(rel, e.path, e, reason, expect)
    for name in temps.of(rel, e):
        try:
            st = _lstat_below(root, _with_head(rel, name))
        except OSError:
            continue
        if _ours(st) and st.st_size <= e.size:
            item.temp, item.partial = name, st.st_size
            break
    return item


class TempIndex:
    """restore's temp names in each folder, listed once (never through a symlink)"""

    def __init__(self, root: str) -> None:
        self.root = root
        self._names: dict[str, list[str]] = {}

    def of(self, rel: str, e: Entry) -> list[str]:
        head = rel.rpartition("/")[0]
        if head not in self._names:
            self._names[head] = self._list(head)
        return [n for n in self._names[head] if is_temp_of(n, rel, e)]

    def _list(self, head: str) -> list[str]:
        try:
            d = safepath.open_dir(self.root, head)
        except OSError:
            return []
        try:
            return [n for n in os.listdir(d) if RESTORE_TEMP.match(n)]
        except OSError:
            return []
        finally:
            if isinstance(d, int):
                os.close(d)


def _ours(st: os.stat_result) -> bool:
    """a temp file a killed restore of ours left, and nothing planted: a
    regular file we own with no other name (a hard link to someone's file)"""
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_uid == getattr(os, "geteuid", lambda: st.st_uid)()


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
        if _ours(st) and st.st_size <= limit:
            return fd, st.st_size
        os.close(fd)
    os.unlink(p.of(name), dir_fd=p.fd)
    return safepath.create_exclusive(p, name), 0


def _with_head(rel: str, name: str) -> str:
    """name in rel's folder"""
    head = rel.rpartition("/")[0]
    return f"{head}/{name}" if head else name


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
                    stem = f"{head}/{_stem_of(name)}" if head else _stem_of(name)
                    if stem in current or (paths and not any(is_inside(owner, p) for p in paths)):
                        continue
                    _unlink(d, name)
                    count += 1
        except OSError:
            continue
    return count


# --- the command (its output is in restore_output.py) ------------------------------

class RestoreReporter(Protocol):
    """what Restore and Fetcher tell the user about: restore_output.Reporter"""

    def start(self, files: int, total: int) -> None: ...
    def stop(self) -> None: ...
    def received(self, n: int) -> None: ...
    def ended(self, item: Item) -> None: ...
    def warn(self, message: str) -> None: ...
    def line(self, text: str) -> None: ...


class Restore:
    def __init__(self, url: str, opts: RestoreOptions, reporter: RestoreReporter) -> None:
        self.url = url
        self.opts = opts
        self.reporter = reporter
        self.root = os.path.abspath(os.path.expanduser(opts.local_dir))
        self.backup_dir = clean_rel(opts.backup_dir, "--backup-dir")
        self.paths = [clean_rel(p, "--path") for p in opts.paths]
        self.policy = RetryPolicy(opts.remote.retry_for, on_retry=self._on_retry)
        self.transfers = opts.remote.transfers or DEFAULT_TRANSFERS[dest_kind(url)]
        self.run_name: str | None = None  # the trash run restored, if any
        self._scratch: str | None = None  # temp folder holding the private record copy

    def _on_retry(self, what: str, exc: Exception, wait: float) -> None:
        self.reporter.warn(f"{what}: {exc}; retrying in {wait:.1f}s")

    def _open(self, url: str, with_state: bool):
        options = RemoteOptions(**vars(self.opts.remote))
        options.state_dir = None
        if with_state and self.opts.state_dir:
            # the pair's S3 record saves a HEAD per object; a private copy,
            # since the remote rewrites its record and restore holds no lock
            options.state_dir = self._private_record()
        return open_remote(url, options)

    def _private_record(self) -> str:
        real = os.path.join(os.path.abspath(os.path.expanduser(self.opts.state_dir or "")), "remote")
        self._scratch = tempfile.mkdtemp(prefix="reconcile-restore-")
        return private_copy(real, self._scratch)  # no record: restore HEADs instead

    def _drop_scratch(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def list_trash(self) -> dict[str, list[int]]:
        trash = child_url(self.url, self.backup_dir)
        remote = self._open(trash, False)
        try:
            return trash_runs(self._entries(remote, display_url(trash), missing_ok=True))
        finally:
            remote.close()

    def _entries(self, remote, what: str, missing_ok: bool = False) -> list[Entry]:
        try:
            return self.policy.run(lambda: list(remote.list()), f"list {what}")
        except NotFound:
            if missing_ok:
                return []
            raise ConfigError(f"{what} does not exist; check the URL") from None

    def run(self) -> Outcome:
        self._check_local()
        started = time.monotonic()
        if self.opts.from_trash is not None:
            url, with_state, skip = child_url(self.url, self.backup_dir), False, []
        else:
            skip = [self.backup_dir, DEFAULT_TRASH, *known_trash(self.opts.state_dir)]
            url, with_state = self.url, True
        try:
            remote = self._open(url, with_state)
        except BaseException:
            self._drop_scratch()
            raise
        try:
            entries = self._entries(remote, display_url(url))
            if not entries and self.opts.from_trash is None:
                # on S3 a mistyped prefix lists nothing, as a missing folder would
                raise ConfigError(f"nothing to restore: {display_url(url)} is empty or does not exist; "
                                  "check the URL (on S3 the bucket and the prefix)")
            strip = pick_run(trash_runs(entries), self.opts.from_trash) if self.opts.from_trash else None
            self.run_name = strip
            out = Outcome(self._survey(entries, skip, strip, remote.capabilities.mtime_precision_ns))
            if not self.opts.dry_run:
                self._fetch(remote, out)
        finally:
            self.reporter.stop()
            try:
                remote.close()
            finally:
                self._drop_scratch()
        out.seconds = time.monotonic() - started
        return out

    def _check_local(self) -> None:
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise ConfigError(f"{self.root} is a file; give the folder to restore into")
        if dest_kind(self.url) == "local":
            src = os.path.realpath(os.path.expanduser(local_folder_of(self.url)))
            dst = os.path.realpath(self.root)
            if is_inside(src, dst) or is_inside(dst, src):
                raise ConfigError(f"{src} and {dst} overlap; restore into a folder outside the backup")

    def _survey(self, entries: list[Entry], skip: list[str], strip: str | None, precision: int) -> Survey:
        pairs = []
        for rel, e in select(entries, self.paths, skip, strip):
            if safe_rel(rel):
                pairs.append((rel, e))
            else:
                self.reporter.warn(f"skipped {shown(e.path)}: not a usable relative path")
        if self.paths and not pairs:
            raise ConfigError(f"nothing on the remote under --path {', '.join(self.paths)}")
        snaps: dict[str, Entry] = {}
        # the snapshot knows the live versions, never what the trash kept
        if self.opts.state_dir and strip is None:
            wanted = {rel for rel, e in pairs if e.kind == FILE and e.hash is None}
            if wanted:
                snaps = snapshot_hashes(self.opts.state_dir, wanted, self.reporter.warn)
        return survey(pairs, self.root, snaps, precision, self.opts.overwrite)

    def _fetch(self, remote, out: Outcome) -> None:
        s = out.survey
        os.makedirs(self.root, exist_ok=True)
        s.blocked += make_dirs(self.root, s.dirs)
        self.reporter.start(len(s.todo), sum(i.entry.size - i.partial for i in s.todo))
        fetcher = Fetcher(remote, self.policy, self.root, self.reporter, self.transfers)
        fetcher.run(s.todo)
        self.reporter.stop()
        out.remote_gone = fetcher.remote_gone
        if fetcher.remote_gone is None:
            # a file not fetched this time keeps its partial; any other temp file is stale
            unfinished = {_with_head(i.rel, temp_stem(i.rel, i.entry)) for i in s.todo if i.result != "done"}
            remove_stale_temps(self.root, s.todo, unfinished, self.paths)


def exit_code(out: Outcome) -> int:
    if out.count("failed") or out.count("corrupt"):
        return EXIT_ERROR
    if out.remote_gone:
        return EXIT_PARTIAL
    return 0
