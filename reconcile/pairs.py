"""What we know of pairs that ran before, and the guards built on it.

Each apply records in its state folder (destination.json) how many files the
destination held and, for a local one, the mount point under it. From these
records and last-run.json:

- an unmounted disk is refused: a destination that held files and is now
  missing or empty, or a local one now on another file system;
- SOURCE and DEST swapped are refused: a local DEST that is (or holds) the
  SOURCE of another pair that ran before;
- a host name that does not resolve fails at once for a pair that never
  reached its destination (a typo), and is retried for one that did;
- restore finds the pair whose snapshot vouches for what it fetches.

Only pairs under the default state root are seen: not those run with --state-dir.
"""

from __future__ import annotations

import json
import os
from typing import Callable

from reconcile.entry import is_inside
from reconcile.errors import ConfigError, Refused, SafetyRefusal, UnresolvedHost
from reconcile.remotes import dest_kind, local_path
from reconcile.statedir import StateDir, default_root, display_url, pair_id
from reconcile.statefile import write_private

DEST_RECORD = "destination.json"
AGAIN = "is the disk mounted? pass --allow-new-destination to start it again"


def mount_point(path: str) -> str:
    """the mount point of the file system holding path, or of its nearest existing parent."""
    path = os.path.realpath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    while not os.path.ismount(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def local_dest_path(dest: str) -> str | None:
    """the real path of a local destination; None for SFTP and S3."""
    if dest_kind(dest) != "local":
        return None
    return os.path.realpath(os.path.expanduser(local_path(dest)))


def _read_json(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def read_dest_record(state: StateDir) -> dict | None:
    return _read_json(state.file(DEST_RECORD))


def ran_before(state: StateDir) -> bool:
    """whether an apply of this pair ever reached its destination."""
    return any(os.path.exists(p) for p in (state.file(DEST_RECORD), state.last_run, state.snapshot))


def record_destination(state: StateDir, source: str, dest: str, files: int) -> None:
    """after an apply: what the destination holds now, and where it lives."""
    local = local_dest_path(dest)
    record = {"source": source, "dest": display_url(dest), "local_path": local, "files": files,
              "mount": mount_point(local) if local and os.path.isdir(local) else None}
    if read_dest_record(state) != record:  # a no-change run spends no fsync on it
        write_private(state.file(DEST_RECORD), json.dumps(record).encode())


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def check_destination(state: StateDir, dest: str, remote_files: int, snapshot_files: Callable[[], int]) -> None:
    """a destination that held files at the last run and is now missing or
    empty, or (a local one) now on another file system, is an unmounted disk
    until the user says otherwise: refilling it would fill the disk under
    the mount point. snapshot_files counts what a pair recorded before
    destination.json existed left there."""
    record = read_dest_record(state) or {}
    held = record.get("files") or 0
    if not record and remote_files == 0:
        held = snapshot_files()
    where = display_url(dest)
    if held and remote_files == 0:
        raise SafetyRefusal(f"the destination {where} held {_plural(held, 'file')} at the last run "
                            f"and is now missing or empty: {AGAIN}")
    local, was = local_dest_path(dest), record.get("mount")
    if local and was and mount_point(local) != was:
        raise SafetyRefusal(f"the destination {where} was on the file system mounted at {was} at the last "
                            f"run and is now on {mount_point(local)}: {AGAIN}")


def check_dest_parent(dest: str) -> None:
    """a local destination is made only as its last folder, as rsync does: a
    mistyped deep one (/tmp/x/media/USBDISK/backup, /tmp/x/media not there)
    would otherwise be made whole on the system disk."""
    if dest_kind(dest) != "local":
        return
    path = os.path.abspath(os.path.expanduser(local_path(dest)))
    parent, first_missing = os.path.dirname(path), None
    while _missing(parent) and os.path.dirname(parent) != parent:
        first_missing, parent = parent, os.path.dirname(parent)
    if os.path.exists(parent) and not os.path.isdir(parent):  # every upload would fail 'Not a directory'
        raise ConfigError(f"destination {path}: {parent} is a file, not a folder: give a folder path")
    if first_missing:
        raise ConfigError(
            f"destination {path}: {first_missing} does not exist, and reconcile makes only the destination's "
            f"last folder (as rsync does). A typo, or a disk not mounted? If the path is right, create it "
            f"first: mkdir -p {os.path.dirname(path)}")


def _missing(path: str) -> bool:
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # not there, or below a file
        return True
    except OSError:
        return False  # there, but not ours to look into: the run says so where it matters
    return False


def recorded_pairs(skip: str = "") -> list[tuple[str, str, str]]:
    """(state folder, source, dest) of every pair under the default state root
    that has run apply, but the one whose state folder is skip. dest is the
    real path of a local destination, else the URL as shown."""
    root = default_root()
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    pairs = []
    for name in names:
        state = StateDir(os.path.join(root, name))
        if skip and os.path.realpath(state.path) == os.path.realpath(skip):
            continue
        record = read_dest_record(state) or _read_json(state.last_run)
        if record and isinstance(record.get("source"), str) and isinstance(record.get("dest"), str):
            pairs.append((state.path, record["source"], record.get("local_path") or record["dest"]))
    return pairs


def check_reverse(state: StateDir, dest: str) -> None:
    """a local DEST that is (or holds) the SOURCE of another pair that ran
    before is a swap, as `apply --delete /mnt/backup/Pictures ~/Pictures`: it
    would overwrite or delete the originals. A pair that ran itself was
    allowed already; a copy of a backup elsewhere (a chain) is no swap."""
    target = local_dest_path(dest)
    if target is None or ran_before(state):
        return
    for _, source, shown in recorded_pairs(state.path):
        if is_inside(os.path.realpath(source), target):
            raise SafetyRefusal(
                f"the destination {target} is the source of the pair {source} -> {shown} that ran before: "
                "SOURCE and DEST swapped? nothing was changed. Pass --allow-reverse to copy into it anyway")


def _target(dest: str) -> str:
    return pair_id("/", dest).split("\0", 1)[1]


def _mtime(path: str) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return 0.0


def pair_state_for_dest(dest: str, local_dir: str | None) -> str | None:
    """the state folder of the pair that mirrors into dest: the one whose
    source is local_dir, else the one that ran last."""
    target = _target(dest)
    found = [(path, source) for path, source, shown in recorded_pairs() if _target(shown) == target]
    if local_dir:
        for path, source in found:
            if os.path.realpath(source) == os.path.realpath(os.path.expanduser(local_dir)):
                return path
    found.sort(key=lambda f: _mtime(StateDir(f[0]).last_run))
    return found[-1][0] if found else None


def refuse_unknown_host(exc: Exception, state: StateDir, dest: str) -> None:
    """a host name that does not resolve, or a port where nothing listens, for
    a pair that never reached its destination, is a typo most likely: waiting
    minutes for it helps nobody."""
    if not isinstance(exc, (UnresolvedHost, Refused)) or ran_before(state):
        return  # it worked before: a laptop waking with no network yet, a server restarting
    where = "the S3 endpoint" if dest_kind(dest) == "s3" else display_url(dest)
    if isinstance(exc, Refused):
        # the reason ends in a question (is the server running there?): the advice follows it as a sentence
        raise ConfigError(f"{exc} This pair has never connected, so it is not retried: "
                          f"check the port in {where}") from None
    raise ConfigError(f"cannot resolve host {exc.host}: check the host name in {where} "
                      "(this pair has never connected, so it is not retried)") from None
