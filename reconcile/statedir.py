"""Where a SOURCE+DEST pair keeps its state: snapshot, journal, lock, log."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import sys
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from reconcile.errors import ConfigError


def default_root() -> str:
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~\\AppData\\Local")
        return os.path.join(base, "reconcile", "state")
    if sys.platform == "darwin":
        return os.path.expanduser("~/Library/Application Support/reconcile/state")
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "reconcile")


def display_url(url: str) -> str:
    """The URL without any password, for ids, logs and JSON."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"bad port in {_masked(url)}: use a number, like sftp://me@nas:2222/backup") from None
    if port:
        host = f"{host}:{port}"
    if parts.username:
        host = f"{parts.username}@{host}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _masked(url: str) -> str:
    scheme, _, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    return f"{scheme}://***@{authority.rpartition('@')[2]}{slash}{path}" if "@" in authority else url


SNAPSHOT_BYTES_PER_ENTRY = 50  # measured: 49 on the benchmark trees


def last_snapshot_entries(source: str, dest: str, override: str | None = None) -> int:
    """about how many entries the pair's last snapshot holds, from its size;
    0 where there is none (or the pair cannot be named)."""
    try:
        snapshot = StateDir.for_pair(source, dest, override, create=False).snapshot
        return os.path.getsize(snapshot) // SNAPSHOT_BYTES_PER_ENTRY
    except (OSError, ValueError, ConfigError):
        return 0


def pair_id(source: str, dest: str) -> str:
    """one id for every spelling of the same pair (relative, trailing slash,
    file://, a symlinked path, the scheme's case), so they share one lock."""
    from reconcile.remotes import dest_kind, local_path

    if dest_kind(dest) == "local":
        target = os.path.realpath(os.path.expanduser(local_path(dest)))
    else:
        parts = urlsplit(display_url(dest))
        target = urlunsplit((parts.scheme.lower(), parts.netloc, parts.path.rstrip("/"), "", ""))
    return f"{os.path.realpath(os.path.expanduser(source))}\0{target}"


def private_copy(remote_state: str, scratch: str) -> str:
    """a throw-away copy of a pair's remote records (the S3 record) in scratch,
    for commands that hold no lock and write no state: the remote rewrites its
    records as it goes. No records (or unreadable ones): an empty folder."""
    copy = os.path.join(scratch, "remote")
    try:
        shutil.copytree(remote_state, copy, ignore=shutil.ignore_patterns("*.tmp-*"))
    except OSError:
        os.makedirs(copy, exist_ok=True)
    return copy


@dataclass
class StateDir:
    path: str

    @classmethod
    def for_pair(cls, source: str, dest: str, override: str | None = None, create: bool = True) -> "StateDir":
        """create=False: only name it (read-only commands write no state)."""
        if override:
            path = os.path.abspath(os.path.expanduser(override))
        else:
            ident = pair_id(source, dest)
            digest = hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()[:16]
            name = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(os.path.abspath(source)))[:40]
            path = os.path.join(default_root(), f"{name}-{digest}")
        if not create:
            if os.path.lexists(path):
                check_private(path)
            return cls(path)
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
            check_private(path)
            os.makedirs(os.path.join(path, "remote"), mode=0o700, exist_ok=True)
            check_private(os.path.join(path, "remote"))
        except OSError as exc:
            raise ConfigError(
                f"cannot create the state folder {path}: {exc.strerror}; "
                "pass --state-dir DIR with a writable folder") from None
        return cls(path)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def snapshot(self) -> str:
        return self.file("snapshot.msgpack")

    @property
    def journal(self) -> str:
        return self.file("journal.msgpack")

    @property
    def lock(self) -> str:
        return self.file("lock")

    @property
    def last_run(self) -> str:
        return self.file("last-run.json")

    @property
    def remote_state(self) -> str:
        return self.file("remote")

    @property
    def walk_snapshot(self) -> str:
        """the next snapshot, written during the walk; it replaces snapshot once a run completes."""
        return self.file("snapshot.walk.tmp")

    def temp_files(self) -> list[str]:
        """every temp file the state folder may hold: each is written under
        the run lock (snapshot, journal and last-run write path + '.tmp')."""
        return [self.walk_snapshot] + [p + ".tmp" for p in (self.snapshot, self.journal, self.last_run)]

    def remove_stale_temps(self) -> None:
        """temp files a killed run left behind (a snapshot half rewritten,
        say). Only under the run lock: then nothing is writing them."""
        stale = self.temp_files()
        try:
            # the S3 record's temp names carry the writer's pid: `plan` writes it without the lock
            names = os.listdir(self.remote_state)
        except OSError:
            names = []
        stale += [os.path.join(self.remote_state, n) for n in names
                  if (m := _RECORD_TEMP.search(n)) and not _alive(int(m.group(1)))]
        for path in stale:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def check_private(path: str) -> None:
    """the state folder decides what a run deletes and replays: trust it only
    when it is ours and no one else can write it (as OpenSSH's StrictModes)"""
    if sys.platform == "win32":
        return
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(f"the state folder {path} is a symlink; reconcile uses only a real folder: "
                          f"pass --state-dir with the folder it points to, or replace the link "
                          f"(rm {path} && mkdir -m 700 {path})")
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"the state folder {path} is not a folder; move it away or pass --state-dir DIR")
    me = os.geteuid()
    if st.st_uid not in (me, 0):
        raise ConfigError(f"the state folder {path} belongs to uid {st.st_uid}, not to you (uid {me}); "
                          f"use your own with --state-dir DIR, or take it over: chown -R {me} {path}")
    if st.st_mode & 0o022:
        raise ConfigError(f"the state folder {path} can be written by other users (mode "
                          f"{stat.S_IMODE(st.st_mode):o}); make it private: chmod 700 {path}")


_RECORD_TEMP = re.compile(r"\.tmp-(\d+)$")


def _alive(pid: int) -> bool:
    if sys.platform == "win32":
        return True  # os.kill there terminates the process: never ask
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass  # someone else's process, or no way to tell: leave its file
    return True
