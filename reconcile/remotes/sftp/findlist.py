"""A remote tree listed by one command over ssh: GNU find, sorted on the server.

Over SFTP a tree is listed a folder at a time, and OpenSSH's sftp-server
formats an `ls -l` line for every name; on 200,000 files that server alone
takes about a second of CPU. Where the account has a POSIX shell with GNU
find and sort, one exec request lists the whole tree for about half that, in
the order the merge reads (sort_key order: byte order, a folder as 'name/').
listing.py uses it where the server runs it, and its SFTP listing otherwise.

Each line is a head, a '/', then the path, NUL-terminated:
    f 38 1700000000.0000000000 644 /a/b.txt
The head holds no '/', so sort's key (-t / -k2: all after the first '/')
is the path, whatever bytes it holds. Rows are what the SFTP listing gives for
the same tree, field for field (tests/test_sftp_find.py lists trees both
ways); symlink targets are filled in by the caller (READLINK), since a
target in the line would be in the sort key.
"""

from __future__ import annotations

import stat as st

from reconcile.entry import DIR, FILE, LINK, TEMP_MARK, decode_path

WAYS = ("auto", "always", "never")  # --ssh-find: by the tree's size, always, or never
HEAD = b"reconcile-list-1"
END = b"reconcile-list-end"
FORMAT = b"%y %s %T@ %m /"
_TEMP = TEMP_MARK.encode()
S_IFREG = st.S_IFREG
_TYPES = {ord("f"): st.S_IFREG, ord("d"): st.S_IFDIR, ord("l"): st.S_IFLNK, ord("p"): st.S_IFIFO,
          ord("s"): st.S_IFSOCK, ord("b"): st.S_IFBLK, ord("c"): st.S_IFCHR}


class Unusable(Exception):
    """the server did not run the listing as asked: use SFTP instead."""


class BadListing(Exception):
    """the listing broke off or holds what find does not print."""


def shell_quote(raw: bytes) -> bytes:
    return b"'" + raw.replace(b"'", b"'\\''") + b"'"


COMMAND = b"sh -s"  # the script comes on stdin: a login shell of any kind (csh, fish) parses only this


def script(root: bytes) -> bytes:
    """the POSIX sh script that lists root (absolute): a head line on stdout
    and stderr (what comes before it is the login's, not ours), the sorted
    rows, and an end line only when sort got through; a find that fails
    says so on stderr, even when killed without a word."""
    start = root if root.startswith(b"/") else b"./" + root  # a name starting with '-' is not an option
    fmt = FORMAT
    return (b"LC_ALL=C; export LC_ALL\n"
            b"printf '%s\\0' " + HEAD + b"; printf '%s\\n' " + HEAD + b" >&2\n"
            b"{ find -H " + shell_quote(start) + b" -mindepth 1 -ignore_readdir_race"
            b" \\( -type d -printf '" + fmt + b"%P/\\0' \\) -o -printf '" + fmt + b"%P\\0' </dev/null; s=$?;"
            b" [ $s = 0 ] || echo \"find: exited with status $s\" >&2; }"
            b" | sort -z -t / -k2 && printf '%s\\0' " + END + b"\n")


class Stderr:
    """what the server said on stderr after our head line: the login's own
    lines before it are not ours to judge."""

    LIMIT = 1 << 16  # the first lines say why; the rest need not be kept

    def __init__(self) -> None:
        self.before = bytearray()
        self.seen = False  # the head line came
        self.after = bytearray()

    def feed(self, data: bytes) -> None:
        if not self.seen:
            self.before += data
            i = self.before.find(HEAD + b"\n")
            if i < 0:
                del self.before[:-len(HEAD)]  # a head split across reads is still found
                return
            data, self.seen = bytes(self.before[i + len(HEAD) + 1:]), True
            self.before.clear()
        self.after += data[:max(0, self.LIMIT - len(self.after))]

    @property
    def first_line(self) -> str:
        """the first line said after the head, or ''."""
        text = bytes(self.after).strip()
        return decode_path(text.splitlines()[0])[:200] if text else ""


class Parser:
    """stdout of script() into rows (entry.row_of); temp names go to temps."""

    def __init__(self, temps: list[str]) -> None:
        self.temps = temps
        self.rest = b""
        self.started = False  # the head line was seen
        self.ended = False  # the end line was seen
        self.rows = 0  # rows handed out
        self.last = b""

    def feed(self, data: bytes) -> list[tuple]:
        parts = (self.rest + data).split(b"\0")
        self.rest = parts.pop()
        if not self.started and parts:
            if not parts[0].endswith(HEAD):  # what comes before it is the login shell's
                raise Unusable(f"the server's shell printed {decode_path(parts[0][:60])!r}")
            self.started = True
            del parts[0]
        if self.ended and parts:
            raise BadListing("text after the end of the listing")
        if parts and parts[-1] == END:
            self.ended = True
            parts.pop()
        out = self.rows_of(parts)
        self.rows += len(out)
        return out

    def rows_of(self, records: list[bytes]) -> list[tuple]:
        # the hot loop of a large listing: kept flat on purpose
        out: list[tuple] = []
        append = out.append
        last = self.last
        rec = b""
        try:
            for rec in records:
                head, _, key = rec.partition(b"/")
                y, size, when, perms = head.split()
                if key <= last:
                    raise BadListing(f"names out of order at {decode_path(key)!r}")
                last = key
                if _TEMP in key:
                    self.temp(key, y)
                    continue
                # SFTP v3 carries whole seconds as uint32: the same value either
                # way; find prints tv_sec first (-5.5 s is "-6.5000000000")
                mtime = (int(when.partition(b".")[0]) & 0xFFFFFFFF) * 1_000_000_000
                if y == b"f":
                    append((key, FILE, int(size), mtime, 0, 0, S_IFREG | int(perms, 8), None, None, None))
                else:
                    kind = DIR if y == b"d" else LINK if y == b"l" else FILE
                    append((key, kind, int(size) if kind == FILE else 0, mtime, 0, 0,
                            _TYPES.get(y[0], 0) | int(perms, 8), None, None, None))
        except (ValueError, IndexError):
            raise BadListing(f"an unexpected line {decode_path(rec[:80])!r}") from None
        finally:
            self.last = last
        return out

    def temp(self, key: bytes, y: bytes) -> None:
        """a temp name goes to temps; what is inside a temp folder, nowhere."""
        path = key[:-1] if y == b"d" else key
        parent, _, name = path.rpartition(b"/")
        if _TEMP in name and _TEMP not in parent:
            self.temps.append(decode_path(path))

    def finish(self) -> None:
        if not self.started:
            raise BadListing("the server's shell printed nothing")
        if self.rest or not self.ended:
            raise BadListing("the listing broke off before its end")
