"""What a destination folder's file system keeps, found out by trying it.

A USB stick (exFAT, FAT32) or an NTFS disk keeps coarser mtimes than the
source, may treat 'A' and 'a' as one name, forbids some names and, on FAT,
files over 4 GiB and times before 1980. The precision and the case rule are
probed (rclone's local backend probes the precision the same way: set a
time the file system could keep, read it back); the rest follows from the
file system's type, read from the mount table. The facts are kept in the
remote's state folder, so one destination is probed once.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import asdict, dataclass, replace
from typing import Callable, Iterator

from reconcile import portable
from reconcile.entry import TEMP_MARK
from reconcile.remotes.base import Capabilities
from reconcile.statefile import write_private

PROBE_RECORD = "dest-probe.json"
RECORD_VERSION = 2
SECOND = 1_000_000_000
# an even second, so that +1 s is odd and +10**k ns is within one second
PROBE_BASE_NS = 1_600_000_000 * SECOND
FAT_EPOCH_NS = 315_532_800 * SECOND  # 1980-01-01T00:00:00Z: FAT and exFAT start there
FAT_END_NS = 4_354_819_198 * SECOND  # 2107-12-31T23:59:58Z: and end there
FAT32_MAX_FILE = (1 << 32) - 1

WINDOWS_FAMILY = {"exfat", "vfat", "msdos", "fat", "ntfs", "ntfs3"}
FAT_FAMILY = {"exfat", "vfat", "msdos", "fat"}
# the coarsest each keeps, for a destination we cannot write to (FAT keeps 2 s)
FALLBACK_PRECISION = {"vfat": 2 * SECOND, "msdos": 2 * SECOND, "fat": 2 * SECOND, "exfat": SECOND,
                      "ntfs": 100, "ntfs3": 100}


@dataclass(frozen=True)
class DestFacts:
    fs_type: str  # exfat, vfat, ntfs, ext4, ... as the mount table (or the disk's boot sector) says
    mtime_precision_ns: int  # what the file system keeps of an mtime
    case_insensitive: bool
    symlinks: bool  # FAT and exFAT cannot hold them
    windows_names: bool  # Windows' rules for names apply (exFAT, FAT, NTFS)
    max_file_size: int | None  # FAT32: 4 GiB - 1
    mtime_min_ns: int | None  # FAT and exFAT: 1980 to 2107
    mtime_max_ns: int | None


def with_facts(caps: Capabilities, facts: DestFacts) -> Capabilities:
    """a local folder's capabilities once its file system is known."""
    span = (facts.mtime_min_ns, facts.mtime_max_ns) \
        if facts.mtime_min_ns is not None and facts.mtime_max_ns is not None else None
    return replace(caps, mtime_precision_ns=facts.mtime_precision_ns, case_insensitive=facts.case_insensitive,
                   symlinks=caps.symlinks and facts.symlinks,
                   fs_type=facts.fs_type, windows_names=facts.windows_names,
                   max_file_size=facts.max_file_size, mtime_range=span)


def facts_for(root: str, state_dir: str | None) -> DestFacts:
    """the destination's facts: recorded ones while it is the same disk, else probed."""
    where = _existing_folder(root)
    facts = recorded_facts(state_dir, root, _device(where), lambda: probe(where))
    assert facts is not None  # a local probe always answers (with fallbacks)
    return facts


def recorded_facts(state_dir: str | None, root: str, device: int | str | None,
                   probe_now: Callable[[], DestFacts | None]) -> DestFacts | None:
    """the facts recorded for (root, device) in state_dir, else probe_now()'s,
    recorded when it gives any."""
    record = os.path.join(state_dir, PROBE_RECORD) if state_dir else None
    known = _load(record, root, device)
    if known is not None:
        return known
    facts = probe_now()
    if facts is not None and record is not None and device is not None and os.path.isdir(state_dir or ""):
        body = {"v": RECORD_VERSION, "root": root, "device": device, "facts": asdict(facts)}
        try:
            write_private(record, json.dumps(body).encode())
        except OSError:
            pass  # probed again next run
    return facts


def probe(folder: str) -> DestFacts:
    fs_type = file_system_type(folder)
    fat = fs_type in FAT_FAMILY
    precision = probe_precision(folder)
    if precision is None:
        precision = FALLBACK_PRECISION.get(fs_type, 1)
    case_insensitive = probe_case_insensitive(folder)
    return DestFacts(
        fs_type=fs_type,
        mtime_precision_ns=precision,
        case_insensitive=bool(case_insensitive) if case_insensitive is not None else fat,
        symlinks=probe_symlinks(folder) if not fat else False,
        windows_names=fs_type in WINDOWS_FAMILY,
        max_file_size=FAT32_MAX_FILE if fs_type in ("vfat", "msdos", "fat") else None,
        mtime_min_ns=FAT_EPOCH_NS if fat else None,
        mtime_max_ns=FAT_END_NS if fat else None,
    )


_NO_FOLLOW = {"follow_symlinks": False} if os.utime in os.supports_follow_symlinks else {}


@contextlib.contextmanager
def _probe_file(folder: str, label: str) -> Iterator[str | None]:
    """an empty temp file in folder (hidden from listings, removed after);
    None when none can be written there."""
    path = os.path.join(folder, f"{TEMP_MARK}{label}-{uuid.uuid4().hex[:8]}")
    try:
        # a new file, never through a symlink someone left at the name (the destination is not ours)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | portable.NOFOLLOW | portable.BINARY, 0o600))
    except OSError:
        yield None
        return
    try:
        yield path
    finally:
        _remove(path)


def probe_precision(folder: str) -> int | None:
    """the finest step of mtime the folder's file system keeps, in ns: set
    times that need 1 ns, 10 ns, ... 100 ms, then an odd second, and take the
    first read back unchanged; 2 s when not even an odd second is kept (FAT).
    None when no probe file can be written there."""
    with _probe_file(folder, "probe") as path:
        if path is None:
            return None
        try:
            step = 1
            while step <= SECOND:
                t = PROBE_BASE_NS + step
                os.utime(path, ns=(t, t), **_NO_FOLLOW)  # a link swapped in for it: its own time
                if os.lstat(path).st_mtime_ns == t:
                    return step
                step *= 10
            return 2 * SECOND
        except OSError:
            return None


def probe_case_insensitive(folder: str) -> bool | None:
    """does the folder find 'Ab' under 'aB'? None when it cannot be written."""
    with _probe_file(folder, "case-Ab") as path:
        if path is None:
            return None
        # the tag is new: 'aB' can only be found as 'Ab' itself (FUSE gives
        # each spelling its own inode number, so samefile cannot tell)
        head, name = os.path.split(path)
        return os.path.lexists(os.path.join(head, name.replace("case-Ab-", "case-aB-")))


def probe_symlinks(folder: str) -> bool:
    """can the folder hold a symlink? (ntfs-3g can; FAT and exFAT cannot)"""
    path = os.path.join(folder, f"{TEMP_MARK}link-{uuid.uuid4().hex[:8]}")
    try:
        os.symlink("target", path)
    except OSError:
        return False
    _remove(path)
    return True


def file_system_type(folder: str) -> str:
    """exfat, vfat, ntfs, ext4...: the mount table's type, or for a FUSE mount
    of a disk (fuseblk), what the disk's boot sector names."""
    mount = _mount_of(folder)
    if mount is None:
        return "unknown"
    fs_type, source = mount
    if fs_type.startswith("fuseblk") or fs_type.startswith("fuse."):
        sub = fs_type.split(".", 1)[1] if "." in fs_type else ""
        return _boot_sector_type(source) or {"exfat": "exfat", "ntfs-3g": "ntfs", "ntfs": "ntfs"}.get(sub, fs_type)
    if fs_type in ("ntfs3", "ntfs"):
        return "ntfs"
    return fs_type


def _boot_sector_type(device: str) -> str | None:
    try:
        with open(device, "rb") as f:
            head = f.read(512)
    except OSError:
        return None
    if head[3:11] == b"EXFAT   ":
        return "exfat"
    if head[3:11] == b"NTFS    ":
        return "ntfs"
    if head[82:87] == b"FAT32" or head[54:59] in (b"FAT12", b"FAT16"):
        return "vfat"
    return None


def _mount_of(folder: str) -> tuple[str, str] | None:
    """(type, source) of the mount holding folder, from /proc/self/mountinfo."""
    real = os.path.realpath(folder)
    best: tuple[int, str, str] | None = None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 2:
            continue
        point = _unescape(fields[4])
        if real == point or real.startswith(point.rstrip("/") + "/"):
            if best is None or len(point) >= best[0]:
                best = (len(point), tail[0], _unescape(tail[1]))
    return (best[1], best[2]) if best else None


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _existing_folder(root: str) -> str:
    """root, or its nearest existing parent when root is still to be made."""
    path = os.path.abspath(root)
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _device(folder: str) -> int | None:
    try:
        return os.stat(folder).st_dev
    except OSError:
        return None


def _load(record: str | None, root: str, device: int | str | None) -> DestFacts | None:
    if record is None or device is None:
        return None
    try:
        with open(record, "rb") as f:
            body = json.loads(f.read())
        if body.get("v") != RECORD_VERSION or body.get("root") != root or body.get("device") != device:
            return None  # another disk on the same mount point: probe it afresh
        return DestFacts(**body["facts"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
