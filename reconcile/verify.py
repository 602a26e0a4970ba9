"""`reconcile verify`: a read-only audit that the remote matches the source
(what it prints is the command line's: reconcile/cli/verify.py).

The source walk and the remote listing are merged in their shared order and
compared by size and mtime at the remote's precision (the engine's own
"changed" rule); with --hash the remote content of each same-size file is
read back through download() and compared by xxh3. Nothing is written: no
lock, no snapshot, no journal, and the remote's private records (the S3
etag record) are read from a temporary copy.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from reconcile.diff import SortedStream, file_changed, with_implied_dirs
from reconcile.engine import check_paths
from reconcile.pairs import local_dest_path, refuse_unknown_host
from reconcile.entry import DIR, FILE, LINK, Entry, is_inside
from reconcile.errors import NotFound, ReconcileError, SourceChanged
from reconcile.excludes import Excludes
from reconcile.hashing import hash_file
from reconcile.names import unstorable
from reconcile.remotes import open_remote, remote_class
from reconcile.remotes.base import RemoteOptions
from reconcile.remotes.retry import RetryingRemote, RetryPolicy
from reconcile.shown import printable
from reconcile.statedir import StateDir, display_url, private_copy
from reconcile.trash import DEFAULT_TRASH, known_trash
from reconcile.walk import WalkReport, walk

HASH_BATCH = 64


@dataclass
class Difference:
    path: str
    what: str  # missing | extra | size | mtime | content | type | target
    detail: str = ""

    def to_json(self) -> dict:
        return {"path": self.path, "what": self.what, "detail": self.detail}


@dataclass
class VerifyResult:
    source: str
    dest: str
    differences: list[Difference] = field(default_factory=list)
    extra_kept: list[Difference] = field(default_factory=list)  # remote-only, and not deleting
    warnings: list[str] = field(default_factory=list)
    # source entries the destination cannot hold (names.unstorable): (path, why); never there, not "missing"
    not_stored: list[tuple[str, str]] = field(default_factory=list)
    content_paths: list[str] = field(default_factory=list)  # same size and mtime, other content
    repaired: list[str] = field(default_factory=list)  # re-sent by --repair
    dest_missing: bool = False  # a local destination folder not there (a disk not mounted?)
    files: int = 0
    hashed: int = 0
    hashed_bytes: int = 0
    seconds: float = 0.0

    @property
    def equal(self) -> bool:
        return not self.differences and not self.not_stored  # what cannot be stored is not backed up either


@dataclass
class _Pair:
    local: Entry
    remote: Entry


def verify(source: str, dest: str, options: RemoteOptions, exclude: list[str], by_hash: bool,
           delete: bool, state_dir: str | None = None, links: str = "skip") -> VerifyResult:
    started = time.monotonic()
    src = check_paths(source, dest)
    result = VerifyResult(src, display_url(dest))
    state = StateDir.for_pair(src, dest, state_dir, create=False)
    with tempfile.TemporaryDirectory(prefix="reconcile-verify-") as tmp:
        options.state_dir = private_copy(state.remote_state, tmp)
        policy = RetryPolicy(options.retry_for, on_retry=lambda what, exc, wait: refuse_unknown_host(exc, state, dest))
        remote = RetryingRemote(open_remote(dest, options), policy)
        try:
            # the remote trash is not part of the mirror
            trash = [DEFAULT_TRASH, *known_trash(state.path)]
            excludes = Excludes(exclude, protected=trash)
            pairs = policy.run(lambda: _compare(src, remote, excludes, delete, result, links,
                                                      bool(options.extra.get("name_encoding"))), "list")
            _missing_folder(dest, result)
            if by_hash:
                _hash_all(src, remote, pairs, tmp, options.transfers or remote_class(dest).default_transfers, result)
        finally:
            remote.close()
    result.seconds = time.monotonic() - started
    return result


def _missing_folder(dest: str, result: VerifyResult) -> None:
    """a local destination that is not there is most often a disk not mounted:
    say so before the list of every file as missing"""
    folder = local_dest_path(dest)
    if folder is not None and not os.path.isdir(folder):
        result.dest_missing = True
        result.warnings.insert(0, f"the destination {folder} does not exist: is the disk mounted? "
                                  "every file shows as missing")


def _compare(src: str, remote, excludes: Excludes, delete: bool, result: VerifyResult,
             links: str = "skip", encoding: bool = False) -> list[_Pair]:
    """the merge join; returns the same-size file pairs --hash reads back."""
    result.differences.clear()
    result.extra_kept.clear()
    result.warnings.clear()
    result.not_stored.clear()
    result.files = 0
    caps = remote.capabilities
    cannot_hold = _unstorable_check(caps, encoding, result)
    report = WalkReport()
    local: Iterable[Entry] = walk(src, excludes, report, links)
    remote_entries: Iterable[Entry] = _listing(remote)
    if not caps.empty_dirs:
        # folders exist on S3 only through their files: compare files alone
        local = (e for e in local if e.kind != DIR or e.error)
        remote_entries = (e for e in with_implied_dirs(remote_entries) if e.kind != DIR)
    pairs: list[_Pair] = []
    for c, r in _joined(local, remote_entries, excludes, result):
        if c is not None and c.kind == FILE:
            result.files += 1
        diff = _differs(c, r, caps.mtime_precision_ns, caps.mtime_range)
        if diff is not None and diff.what == "missing" and cannot_hold(c):
            continue  # apply leaves it out with its reason: it can never be there
        if diff is None:
            if c is not None and r is not None and c.kind == FILE:
                pairs.append(_Pair(c, r))
        elif diff.what == "extra" and not delete:
            result.extra_kept.append(diff)
        else:
            result.differences.append(diff)
    result.warnings.extend(f"cannot read {u}; not compared" for u in report.unreadable)
    return pairs


def _unstorable_check(caps, encoding: bool, result: VerifyResult):
    """c -> True for a source entry the destination cannot hold (or one inside a
    folder it cannot hold), each recorded once in result.not_stored as apply words it"""
    refused: list[str] = []
    if not (caps.windows_names or caps.max_file_size is not None or caps.utf8_names):  # USB disks, S3
        return lambda c: False

    def check(c: Entry) -> bool:
        if any(is_inside(c.path, f) for f in refused[-1:]):
            return True  # its folder was left out, with one warning for all inside
        why = unstorable(c, caps, encoding and caps.name_encoding)
        if why is None:
            return False
        result.not_stored.append((_shown(c), why))
        if c.kind == DIR:
            refused.append(c.path)
        return True

    return check


def _listing(remote) -> Iterator[Entry]:
    try:
        yield from remote.list()
    except NotFound:
        return  # no root yet: everything is missing


def _joined(local: Iterable[Entry], remote: Iterable[Entry], excludes: Excludes,
            result: VerifyResult) -> Iterator[tuple[Entry | None, Entry | None]]:
    cur, rem = SortedStream(local), SortedStream(remote)
    unreadable: str | None = None
    while cur.key is not None or rem.key is not None:
        key = min(k for k in (cur.key, rem.key) if k is not None)
        c, r = cur.take(key), rem.take(key)
        path = (c or r).path
        if unreadable is not None and is_inside(path, unreadable):
            continue  # apply leaves what is under an unreadable folder alone
        if r is not None and excludes.excluded(r.path, r.kind == DIR):
            r = None  # excluded remote files are left alone too
        if c is not None and c.error is not None:
            unreadable = c.path
            continue
        if c is not None or r is not None:
            yield c, r


def _differs(c: Entry | None, r: Entry | None, precision_ns: int,
             span: tuple[int, int] | None = None) -> Difference | None:
    if r is None:
        return Difference(_shown(c), "missing", "on the source, not on the remote")
    if c is None:
        return Difference(_shown(r), "extra", "on the remote, not on the source")
    if c.kind != r.kind:
        return Difference(_shown(c), "type", f"source has a {_kind(c)}, the remote a {_kind(r)}")
    if c.kind == LINK:
        if c.target == r.target:
            return None
        return Difference(_shown(c), "target", f"source points to {c.target!r}, the remote to {r.target!r}")
    if not file_changed(r, c, precision_ns, span=span):
        return None
    if c.size != r.size:
        return Difference(_shown(c), "size", f"source {c.size} bytes, remote {r.size} bytes")
    return Difference(_shown(c), "mtime", f"source {_when(c.mtime_ns)}, remote {_when(r.mtime_ns)}")


def _shown(e: Entry) -> str:
    return printable(e.path) + ("/" if e.kind == DIR else "")


def _kind(e: Entry) -> str:
    return {FILE: "file", DIR: "folder"}.get(e.kind, "symlink")


def _when(ns: int | None) -> str:
    if ns is None:
        return "unknown"
    frac = f".{ns % 1_000_000_000:09d}".rstrip("0").rstrip(".")
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns // 1_000_000_000)) + frac


# --- --hash ----------------------------------------------------------------------------


def _hash_all(src: str, remote, pairs: list[_Pair], tmp: str, workers: int, result: VerifyResult) -> None:
    with ThreadPoolExecutor(workers) as pool:
        for i in range(0, len(pairs), HASH_BATCH):
            batch = pairs[i:i + HASH_BATCH]
            for pair, outcome in zip(batch, pool.map(lambda p: _hash_one(src, remote, p, tmp), batch)):
                _record_hash(pair, outcome, result)


def _hash_one(src: str, remote, pair: _Pair, tmp: str) -> bool | str:
    """True when the contents match, False when not, a message when unknown."""
    local_path = os.path.join(src, *pair.local.path.split("/"))
    try:
        local_hash = hash_file(local_path, pair.local.size, pair.local.mtime_ns)
    except (SourceChanged, OSError) as exc:
        return f"source changed or unreadable ({getattr(exc, 'strerror', None) or exc}); not compared"
    fd, copy = tempfile.mkstemp(dir=tmp)
    os.close(fd)
    try:
        # no more than the listing said: a server's own word on the size is not trusted
        remote.download(pair.remote.path, copy, limit=pair.remote.size)
        return hash_file(copy) == local_hash
    except NotFound:
        return "vanished from the remote while verifying"
    except SourceChanged as exc:
        return f"changed on the remote while verifying ({exc}); not compared"
    finally:
        os.unlink(copy)


def _record_hash(pair: _Pair, outcome: bool | str, result: VerifyResult) -> None:
    if isinstance(outcome, str):
        result.warnings.append(f"{printable(pair.local.path)}: {outcome}")
        return
    result.hashed += 1
    result.hashed_bytes += pair.local.size
    if not outcome:
        result.content_paths.append(pair.local.path)
        result.differences.append(Difference(printable(pair.local.path), "content",
                                             "same size and mtime, different content (xxh3)"))


# --- --repair ----------------------------------------------------------------------------


def resend(source: str, dest: str, options: RemoteOptions, result: VerifyResult, state_dir: str | None,
           reporter) -> None:
    """send again the files whose remote content differs, under the pair's
    lock and with its real remote records (the S3 etag record): apply cannot
    see such a difference, since size and mtime match. reporter: an
    engine.Reporter (the command line's, quiet)"""
    from reconcile.engine import Run, RunOptions
    from reconcile.lock import RunLock

    opts = RunOptions(state_dir=state_dir, remote=dataclasses.replace(options, state_dir=None))
    run = Run(source, dest, opts, reporter)
    try:
        with RunLock(run.state.lock):
            for path in result.content_paths:
                local = os.path.join(run.source, *path.split("/"))
                try:
                    st = os.stat(local)
                    run.remote.upload(local, path, Entry(path, FILE, st.st_size, st.st_mtime_ns))
                except (ReconcileError, OSError) as exc:
                    result.warnings.append(f"{printable(path)}: not re-sent: {exc}")
                    continue
                result.repaired.append(path)
    finally:
        run.close()
    shown = {printable(p) for p in result.repaired}
    result.differences = [d for d in result.differences if not (d.what == "content" and d.path in shown)]
