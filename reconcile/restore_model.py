"""What a restore is about (reconcile/restore.py drives it): its options, the
items it fetches, what the survey found, the outcome; the names it gives temp
files; the trash runs a remote holds and which entries a restore covers."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

from reconcile.entry import DIR, FILE, TEMP_MARK, Entry, encode_path, is_inside, is_safe_path, temp_tail
from reconcile.errors import EXIT_ERROR, EXIT_PARTIAL, ConfigError
from reconcile.remotes import dest_kind
from reconcile.remotes.base import RemoteOptions
from reconcile.shown import printable
from reconcile.trash import DEFAULT_TRASH

CORRUPT_SUFFIX = ".reconcile-corrupt"
# "r" marks our own temp names apart from an upload's (hex never holds an r)
RESTORE_TEMP = re.compile(re.escape(TEMP_MARK) + r"r[0-9a-f]{16}-")


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


def exit_code(out: Outcome) -> int:
    if out.count("failed") or out.count("corrupt"):
        return EXIT_ERROR
    if out.remote_gone:
        return EXIT_PARTIAL
    return 0


class RestoreReporter(Protocol):
    """what Restore and Fetcher tell the user about: restore_output.Reporter"""

    def start(self, files: int, total: int) -> None: ...
    def stop(self) -> None: ...
    def received(self, n: int) -> None: ...
    def ended(self, item: Item) -> None: ...
    def warn(self, message: str) -> None: ...
    def line(self, text: str) -> None: ...


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
    return temp_tail(rel.rsplit("/", 1)[-1])


def stem_of(name: str) -> str:
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


def in_folder_of(rel: str, name: str) -> str:
    """name in rel's folder"""
    head = rel.rpartition("/")[0]
    return f"{head}/{name}" if head else name
