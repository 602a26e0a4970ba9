"""What a destination cannot hold -- names, case twins, sizes, times -- and
the opt-in mapping that stores forbidden names.

exFAT, FAT and NTFS (as Windows reads it) forbid : ? * " < > | \\, control
characters, a trailing dot or space, the reserved device names (CON, NUL,
COM1...) and names over 255 UTF-16 units. A case-insensitive disk holds one
of two names that differ only in case. A file over FAT32's 4 GiB cannot be
written at all. An mtime before 1980 (or after 2107) cannot be kept on FAT
or exFAT: it is stored clamped (diff.clamp_mtime) and reported when sent,
and the next run compares the clamped time, so sends nothing. Each such source entry is left out of the run with one
message saying why (refusals()), and the rest of the run goes on.

--name-encoding stores the forbidden characters as rclone's local backend
does on Windows (lib/encoder, LocalWindows): ':' as the full-width '：' and
so on, a trailing space as '␠', a trailing dot as '．', control characters as
the Unicode control pictures, bytes that are not UTF-8 as '‛' and two hex
digits; a name that already holds one of those look-alikes quotes it with
'‛'. So a disk written by one reads back the same through the other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator

from reconcile.diff import Changes, clamp_mtime, file_changed
from reconcile.entry import DIR, FILE, LINK, Entry, decode_path, is_inside, parent_of
from reconcile.plan import Op
from reconcile.remotes.base import Capabilities

FORBIDDEN = ':?*"<>|\\'
RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)}
MAX_UTF16_UNITS = 255

QUOTE = "\u201b"  # ‛ SINGLE HIGH-REVERSED-9 QUOTATION MARK
FULL_OFFSET = 0xFEE0  # printable ASCII + this = its FULLWIDTH form
SYMBOL_NULL = 0x2400  # ␀; control character c is pictured as SYMBOL_NULL + c
SPACE_SYMBOL = "\u2420"  # ␠
FULL_STOP = "\uff0e"  # ．
_MAPPED = {c: chr(ord(c) + FULL_OFFSET) for c in FORBIDDEN}
_UNMAPPED = {v: k for k, v in _MAPPED.items()}
_LOOKALIKES = set(_UNMAPPED) | {"\uff0f", QUOTE, chr(SYMBOL_NULL)}  # ／ too: rclone maps '/' there
_NEEDS_ENCODING = re.compile("[" + re.escape(FORBIDDEN + "".join(_LOOKALIKES)) +
                             "\x00-\x1f\u2401-\u241f\udc80-\udcff]|[ .\u2420\uff0e]$")
_NEEDS_DECODING = re.compile("[" + re.escape("".join(_LOOKALIKES)) + "\u2401-\u241f]|[\u2420\uff0e]$")


# --- rclone's mapping -----------------------------------------------------------

def encode_name(name: str) -> str:
    """the name as stored under --name-encoding (rclone's LocalWindows Encode)."""
    if not _NEEDS_ENCODING.search(name):
        return name
    if name == FULL_STOP:
        return QUOTE + FULL_STOP
    if name == FULL_STOP * 2:
        return (QUOTE + FULL_STOP) * 2
    suffix = ""
    last = name[-1:]
    if last == " ":
        suffix, name = SPACE_SYMBOL, name[:-1]
    elif last == SPACE_SYMBOL:
        suffix, name = QUOTE + SPACE_SYMBOL, name[:-1]
    elif last == ".":
        suffix, name = FULL_STOP, name[:-1]
    elif last == FULL_STOP:
        suffix, name = QUOTE + FULL_STOP, name[:-1]
    out = []
    for c in name:
        o = ord(c)
        if c in _MAPPED:
            out.append(_MAPPED[c])
        elif c in _LOOKALIKES or SYMBOL_NULL < o <= SYMBOL_NULL + 0x1F:
            out.append(QUOTE + c)
        elif o <= 0x1F:
            out.append(chr(SYMBOL_NULL + o))
        elif 0xDC80 <= o <= 0xDCFF:  # a byte that is not UTF-8 (surrogateescape)
            out.append(f"{QUOTE}{o - 0xDC00:02X}")
        else:
            out.append(c)
    return "".join(out) + suffix


def decode_name(name: str) -> str:
    """the source name a stored name stands for (rclone's LocalWindows Decode)."""
    if not _NEEDS_DECODING.search(name):
        return name
    if name == QUOTE + FULL_STOP:
        return FULL_STOP
    if name == (QUOTE + FULL_STOP) * 2:
        return FULL_STOP * 2
    suffix = ""
    last = name[-1:]
    if last in (SPACE_SYMBOL, FULL_STOP):
        name = name[:-1]
        if name.endswith(QUOTE):
            suffix, name = last, name[:-1]
        else:
            suffix = " " if last == SPACE_SYMBOL else "."
    out: list[str] = []
    quoted = skip = False
    for i, c in enumerate(name):
        if skip:
            skip = False
            continue
        unquote, quoted = quoted, False
        o = ord(c)
        if c == QUOTE and not unquote:
            quoted = True
        elif c == chr(SYMBOL_NULL) or c == QUOTE:
            out.append(c if unquote or c == QUOTE else "\x00")
        elif c in _UNMAPPED or c == "\uff0f":
            out.append(c if unquote else chr(o - FULL_OFFSET))
        elif SYMBOL_NULL < o <= SYMBOL_NULL + 0x1F:
            out.append(c if unquote else chr(o - SYMBOL_NULL))
        elif unquote and _hex_byte(name[i:i + 2]) is not None:
            b = _hex_byte(name[i:i + 2])
            out.append(chr(b) if b < 0x80 else chr(0xDC00 + b))
            skip = True
        else:
            out.append(QUOTE + c if unquote else c)
    if quoted:
        out.append(QUOTE)
    return "".join(out) + suffix


def _hex_byte(s: str) -> int | None:
    if len(s) == 2 and all(c in "0123456789ABCDEFabcdef" for c in s):
        return int(s, 16)
    return None


def to_stored(path: str) -> str:
    """a relative path as stored under --name-encoding"""
    return "/".join(encode_name(p) for p in path.split("/"))


def from_stored(path: str) -> str:
    return "/".join(decode_name(p) for p in path.split("/"))


# --- what cannot be stored --------------------------------------------------------

def name_problem(name: str, encoding: bool) -> str | None:
    """why a Windows-family file system cannot hold this name; None when it can.
    With encoding, only what the mapping cannot mend: reserved names, length."""
    stored = encode_name(name) if encoding else name
    if not encoding:
        for c in name:
            if c in FORBIDDEN:
                return f"'{c}' is not allowed in names"
            if ord(c) < 0x20:
                return f"the control character U+{ord(c):04X} is not allowed in names"
        if name.endswith("."):
            return "a name cannot end with a dot"
        if name.endswith(" "):
            return "a name cannot end with a space"
    stem = stored.split(".", 1)[0].rstrip(" ").upper()
    if stem in RESERVED:
        return f"'{stem}' is a reserved device name on Windows"
    if len(stored.encode("utf-16-le", "surrogatepass")) // 2 > MAX_UTF16_UNITS:
        return f"the name is longer than {MAX_UTF16_UNITS} UTF-16 units"
    return None


def cannot_store(path: str, fs: str, reason: str, mendable: bool) -> str:
    advice = "rename it, or use --name-encoding" if mendable else "rename it"
    return f"cannot store {path} on this destination ({fs or 'this file system'}): {reason}; {advice}"


# --- two source names, one stored name ----------------------------------------------

def fold(name: str) -> str:
    """the name as a case-insensitive disk compares it: each letter's one-letter
    upper case (exFAT's up-case table maps letter to letter, never 'ß' to 'SS')."""
    upper = name.upper()
    if len(upper) == len(name):
        return upper  # no letter grew: the common case, at C speed
    return "".join(u if len(u := c.upper()) == 1 else c for c in name)


def _folded_key(name: bytes) -> bytes:
    if name.isascii():
        return name.upper()
    return fold(decode_path(name)).encode("utf-8", "surrogateescape")


@dataclass
class CollisionWatch:
    """Watches the source walk (sorted rows) for names in one folder that a
    case-insensitive disk holds as one, keeping per open folder only its
    names seen so far."""

    groups: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (folder, folded) -> paths

    def rows(self, rows: Iterable[tuple]) -> Iterator[tuple]:
        stack: list[tuple[bytes, dict[bytes, bytes]]] = [(b"", {})]
        for row in rows:
            key, kind = row[0], row[1]
            raw = key[:-1] if kind == DIR else key
            cut = raw.rfind(b"/")
            parent = raw[:cut + 1]  # b"" at the top; a folder's key ends in '/'
            if stack[-1][0] != parent:
                while len(stack) > 1 and stack[-1][0] != parent:
                    stack.pop()
                if stack[-1][0] != parent:
                    stack.append((parent, {}))  # a folder the walk did not give first
            name = raw[cut + 1:]
            folded = _folded_key(name)
            first = stack[-1][1].setdefault(folded, name)
            if first != name:
                self._collided(parent, first, raw, folded)
            if kind == DIR:
                stack.append((key, {}))
            yield row

    def _collided(self, parent: bytes, first: bytes, raw: bytes, folded: bytes) -> None:
        where = decode_path(parent[:-1])
        group = self.groups.setdefault((where, decode_path(folded)), [decode_path(parent + first)])
        group.append(decode_path(raw))


# --- a folder renamed in case only ---------------------------------------------------

def case_renames(changes: Changes, caps: Capabilities) -> list[Op]:
    """On a case-insensitive disk, 'photos/' renamed 'Photos/' is a stale
    'photos' and a needed 'Photos' that the disk holds as one folder: files
    sent into it would keep the old spelling, and every run would send them
    again. Rename the folder first (one move each, top folders first) and
    take what is inside as already there where it has not changed."""
    if not caps.case_insensitive:
        return []
    wanted = {fold(p): p for p, e in changes.needed.items() if e.kind == DIR}
    if not wanted:
        return []
    renames: list[tuple[str, str]] = []
    ops: list[Op] = []
    stale_dirs = [p for p, s in changes.stale.items() if s.remote.kind == DIR]
    for path in sorted(stale_dirs, key=lambda p: (p.count("/"), p.encode("utf-8", "surrogateescape"))):
        now = _renamed(path, renames)
        target = wanted.get(fold(now))
        if target is None or target == now:
            continue
        inside = sorted(p[len(path) + 1:] for p, s in changes.stale.items()
                        if is_inside(p, path) and p != path and s.remote.kind != DIR)
        renames.append((now, target))
        ops.append(Op("move", now, DIR, to=target, reason="moved", files=inside))
    if renames:
        _rekey(changes, renames, caps)
    return ops


def _renamed(path: str, renames: list[tuple[str, str]]) -> str:
    for old, new in renames:
        if is_inside(path, old):
            path = new + path[len(old):]
    return path


def _rekey(changes: Changes, renames: list[tuple[str, str]], caps: Capabilities) -> None:
    """the stale entries at their spelling after the renames; those the source
    has unchanged there are settled."""
    for path in list(changes.stale):
        new = _renamed(path, renames)
        if new == path:
            continue
        s = changes.stale.pop(path)
        s.remote = replace(s.remote, path=new)
        s.orig = new
        c = changes.needed.get(new)
        if c is not None and not file_changed(s.remote, c, caps.mtime_precision_ns, span=caps.mtime_range):
            del changes.needed[new]
            changes.unchanged += 1
            continue
        s.displaced = c is not None
        changes.stale[new] = s


# --- the refusals of one run ----------------------------------------------------------

def refusals(changes: Changes, caps: Capabilities, encoding: bool,
             collisions: Iterable[list[str]]) -> list[tuple[str, str]]:
    """Take out of changes every source entry the destination cannot hold
    (and everything under a folder it cannot hold); give (path, message) for
    each, one message per folder. Nothing is deleted in their place."""
    out: list[tuple[str, str]] = []
    for group in collisions:
        out += _settle_collision(group, changes, caps)
    if caps.windows_names or caps.max_file_size is not None or caps.utf8_names:  # USB disks, S3
        out += _unstorable(changes, caps, encoding)
    return out


def _settle_collision(paths: list[str], changes: Changes, caps: Capabilities) -> list[tuple[str, str]]:
    """keep the spelling the disk holds already (else the first in sort
    order); leave out the others, whole, and protect what the disk holds."""
    stored = [p for p in paths if p not in changes.needed or p in changes.stale]
    keep = stored[0] if stored else min(paths, key=lambda p: p.encode("utf-8", "surrogateescape"))
    out = []
    for p in paths:
        if p == keep:
            continue
        _drop(p, changes)
        fs = caps.fs_type or "this file system"
        out.append((p, f"cannot store {p} on this destination ({fs}): it and {keep} differ only in case, "
                       f"which {fs} holds as one name; {keep} is kept, {p} is left out; "
                       "rename one of them"))
    return out


def _drop(path: str, changes: Changes) -> None:
    for p in [p for p in changes.needed if is_inside(p, path)]:
        del changes.needed[p]
    for p in [p for p in changes.stale if is_inside(p, path)]:
        del changes.stale[p]  # the disk's copy at this spelling is left as it is


def _unstorable(changes: Changes, caps: Capabilities, encoding: bool) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    refused: set[str] = set()  # folders left out: what is inside goes with them, unreported
    for path in sorted(changes.needed, key=lambda p: p.encode("utf-8", "surrogateescape")):
        if _under(path, refused):
            del changes.needed[path]
            continue
        e = changes.needed[path]
        message = unstorable(e, caps, encoding)
        if message is None:
            continue
        del changes.needed[path]
        changes.stale.pop(path, None)  # an older copy stays as it is
        out.append((path, message))
        if e.kind == DIR:
            refused.add(path)
    return out


def unstorable(e: Entry, caps: Capabilities, encoding: bool) -> str | None:
    """why the destination cannot hold source entry e (its name, a symlink, its
    size), as the warning says it; None when it can. verify asks too."""
    path, fs = e.path, caps.fs_type or "this file system"
    if caps.utf8_names and not _is_utf8(path):
        shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        return f"cannot store {shown} on this destination: the name is not valid UTF-8 and S3 keys must be; rename it"
    reason = name_problem(path.rsplit("/", 1)[-1], encoding) if caps.windows_names else None
    if reason is not None:
        mendable = not encoding and caps.name_encoding and "reserved" not in reason and "longer" not in reason
        return cannot_store(path, fs, reason, mendable)
    if e.kind == LINK and not caps.symlinks:
        return (f"cannot store the symlink {path} on this destination ({fs}): it cannot hold symlinks; "
                "use --links follow to copy what it points to, or --links skip")
    if e.kind == FILE and caps.max_file_size is not None and e.size > caps.max_file_size:
        return (f"cannot store {path} on this destination ({fs}): it is {e.size:,} bytes, over the "
                f"FAT32 file size limit of {caps.max_file_size:,} bytes (4 GiB - 1); "
                "use a disk formatted exFAT or NTFS, or exclude it")
    return None


def _is_utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8, kept as lone surrogates
        return False
    return True


def _under(path: str, folders: set[str]) -> bool:
    while folders and (path := parent_of(path)):
        if path in folders:
            return True
    return False


# --- times it cannot hold ----------------------------------------------------------

def clamp_warnings(changes: Changes, span: tuple[int, int], fs: str) -> list[str]:
    """one warning per file sent with a time the disk cannot hold: only when
    it is sent, so once, not on every run."""
    out = []
    for path, e in changes.needed.items():
        t = e.mtime_ns
        if e.kind == FILE and t is not None and clamp_mtime(t, span) != t:
            out.append(f"{path}: its time {_iso(t)} is outside what {fs or 'this file system'} can hold; "
                       f"stored as {_iso(clamp_mtime(t, span))}")
    return out


def _iso(ns: int) -> str:
    import datetime

    try:
        return datetime.datetime.fromtimestamp(ns / 1e9, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return f"{ns // 1_000_000_000} s from 1970"
