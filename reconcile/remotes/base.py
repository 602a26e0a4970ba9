"""The contract every remote implements (local.py, sftp/, s3/): the class
Remote below. Its abstract methods are what each remote must do; the others
have defaults that are slow but correct (a loop of single calls, rows from
entries, NotSupported), which a remote overrides where it has a faster way.
What a remote can do is said by its Capabilities, never found by probing for
methods.

Paths given to a remote are relative POSIX paths under its root, never empty
for files, never starting with '/', never containing '..' components.
Methods may be called from several threads at once: a remote keeps whatever
per-thread connections it needs.
"""

from __future__ import annotations

import contextlib
import os
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import BinaryIO, Callable, ClassVar, ContextManager, Iterable, Iterator, Protocol

from reconcile.entry import Entry, row_of
from reconcile.errors import NotFound, NotSupported, ReconcileError, Transient

# called with the number of new bytes sent, for progress bars and --bwlimit.
Progress = Callable[[int], None]
# called with remote-specific resume state (bytes confirmed, an UploadId...),
# which the journal persists and hands back to upload() on the next run.
Checkpoint = Callable[[dict], None]


@dataclass(frozen=True)
class Capabilities:
    server_move: bool = True  # move(src, dst) for files without re-sending data
    dir_move: bool = True  # move(src, dst) of a whole directory in one request
    set_mtime: bool = False  # touch(path, entry): set a file's mtime without sending its content
    # upload() of a large changed file copies its unchanged blocks from the old remote file
    # (blockmap.py) and sends the rest; it sends the whole file wherever it cannot
    delta: bool = False
    # directories exist on their own; False: bucket-like (S3), keys only, the
    # folders implied by them (the engine adds them to the listing)
    empty_dirs: bool = True
    case_insensitive: bool = False  # 'A' and 'a' name one file: probed on a local folder (fsprobe.py)
    mtime_precision_ns: int = 1  # 1_000_000_000 on SFTP; probed on a local folder (fsprobe.py)
    symlinks: bool = False
    # what the destination's file system allows (fsprobe.py, sftp/probe.py; names.py applies them)
    fs_type: str = ""  # exfat, vfat, ntfs, ext4...: named in messages
    windows_names: bool = False  # no : ? * " < > | \, no CON or NUL..., no trailing dot or space
    max_file_size: int | None = None  # FAT32: 4 GiB - 1
    utf8_names: bool = False  # names must be valid UTF-8 (S3 keys): the plan leaves the others out, verify too
    mtime_range: tuple[int, int] | None = None  # FAT and exFAT: 1980 to 2107, in ns
    # upload() reports checkpoints and resumes from them; remove_temp_files
    # keeps the temp files or uploads they name (its keep)
    resumable: bool = False
    # a forked child may go on using it once it called forget_connections()
    # (upload_child.py): it then connects afresh and needs no thread or lock of the parent
    fork_safe: bool = False
    name_encoding: bool = False  # stores names as rclone does with --name-encoding (names.py)


@dataclass
class Sent(Entry):
    """what upload() returns: the entry now on the remote, and how many of its
    bytes were copied on the remote from its old version instead of sent"""

    reused: int = 0


def as_sent(entry: Entry, reused: int = 0) -> Sent:
    return Sent(**{f.name: getattr(entry, f.name) for f in fields(Entry)}, reused=reused)


@dataclass
class NetStats:
    """what a run cost on the network, for -v: ssh connections (a handshake
    each), SFTP sessions (a connection's first included) and round trips
    waited on (a read that found nothing to read while a request was out)."""
    connections: int = 0
    sessions: int = 0
    round_trips: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, counts: list[int]) -> None:
        """a forked child's counts (as_list)."""
        with self.lock:
            self.connections += counts[0]
            self.sessions += counts[1]
            self.round_trips += counts[2]

    def as_list(self) -> list[int]:
        return [self.connections, self.sessions, self.round_trips]


@dataclass
class SftpOptions:
    """what only an SFTP remote reads (the port and user are in its URL)"""

    key: str | None = None  # --ssh-key: a private key file
    known_hosts: str | None = None  # --known-hosts: instead of the ssh config's files
    accept_new_host_key: bool = False
    find: str = "auto"  # --ssh-find: list a large tree by running find on the server (findlist.WAYS)


@dataclass
class S3Options:
    """what only an S3 remote reads (the bucket and prefix are in its URL)"""

    endpoint: str | None = None  # --s3-endpoint: an S3-compatible server; None: AWS or AWS_ENDPOINT_URL
    profile: str | None = None  # an AWS profile (region, keys)
    storage_class: str | None = None
    sse: str | None = None  # server-side encryption: AES256 or aws:kms
    sse_kms_key_id: str | None = None


@dataclass
class RemoteOptions:
    """What a remote is given, from flags or the config file, built once by the
    command layer: the options every kind of remote reads, then each kind's own.
    A local folder has none of its own.

    Secrets are never stored here: they come from the environment or agents.
    """

    transfers: int | None = None  # parallel transfers; None: the remote's default
    state_dir: str | None = None  # private folder a remote may keep records in
    retry_for: float = 300.0
    expected_entries: int = 0  # about how many entries the last run saw: a listing may pick its way by it
    # the folders the last run saw (keys, in listing order), read when called: a
    # listing may ask for them all at once. Only where to look, never what is there
    known_folders: Callable[[], Iterable[bytes]] | None = None
    offline: bool = False  # --offline: never connect (a probe takes what is recorded, or nothing)
    sends: bool = False  # an apply: what the plan says is sent (a first sync may open its sessions ahead)
    sftp: SftpOptions = field(default_factory=SftpOptions)
    s3: S3Options = field(default_factory=S3Options)
    # perms and name_encoding (what every remote stores), and tuning knobs the tests set
    extra: dict = field(default_factory=dict)


class SmallUpload(Protocol):
    """one whole file for upload_many (apply.SmallUpload)."""

    local_path: str
    path: str
    entry: Entry
    hash: bytes | None  # set by the remote: the xxh3 of what was sent


class Remote(ABC):
    NAME: ClassVar[str] = "this destination"  # in messages: "S3", "SFTP", "a local folder"
    # what every destination of this kind can do; known without opening one
    CAPABILITIES: ClassVar[Capabilities] = Capabilities()
    default_transfers: ClassVar[int] = 4  # parallel transfers when --transfers is not given
    # files up to this size go through upload_many; -1: none do (its default is a loop of upload)
    batch_max_size: int = -1
    url: str  # for display: never holds a secret

    @classmethod
    def from_url(cls, url: str, options: RemoteOptions) -> "Remote":
        """The remote a destination (URL or folder) names; ConfigError for a
        bad one. Each kind of remote builds itself (remotes.open_remote)."""
        raise NotImplementedError(f"{cls.__name__}.from_url")

    @property
    def capabilities(self) -> Capabilities:
        """this destination's: CAPABILITIES, unless a remote finds out more
        (a local folder probes its file system)."""
        return self.CAPABILITIES

    # --- reading the tree ------------------------------------------------------

    @abstractmethod
    def list(self) -> Iterator[Entry]:
        """Every entry under the root (files and directories, not the root),
        in entry.sort_key order, hiding our own temp names (entry.TEMP_MARK).

        Raises NotFound when the root itself does not exist.
        """

    def list_rows(self) -> Iterator[tuple]:
        """list() as rows (entry.row_of), in the same order. A remote that
        lists faster as rows overrides this."""
        return map(row_of, self.list())

    @abstractmethod
    def stat(self, path: str) -> Entry | None:
        """The entry at path, or None."""

    # --- writing -----------------------------------------------------------------

    @abstractmethod
    def upload(
        self,
        local_path: str,
        path: str,
        entry: Entry,
        progress: Progress | None = None,
        resume: dict | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> Sent:
        """Send local_path to path, creating parents. Never visible under its
        real name until complete (temp name, then rename). Sets the remote
        mtime to entry.mtime_ns and stores entry.hash where the remote can.
        Returns the entry as now on the remote (a Sent: as_sent), its hash
        the xxh3 of what was sent where the remote knows it, its reused the
        bytes copied from the old version instead of sent (capabilities.delta).
        """

    def upload_many(self, items: Iterable[SmallUpload], done: Callable[[SmallUpload, ReconcileError | None], None],
                    progress: Progress | None = None) -> None:
        """Whole small files (at most batch_max_size each): done(item, error)
        once per item, in any order, item.hash set when it was sent. A lost
        connection raises Transient and leaves the items not yet reported to
        the caller. This default sends them one by one with upload()."""
        for item in items:
            try:
                got = self.upload(item.local_path, item.path, item.entry, progress)
            except Transient:
                raise
            except ReconcileError as exc:
                done(item, exc)
                continue
            item.hash = got.hash
            done(item, None)

    def touch(self, path: str, entry: Entry) -> None:
        """Only where capabilities.set_mtime: set the mtime of the file at path
        (which holds entry's content) to entry.mtime_ns, sending no content.
        Raises NotFound when path is not a file of entry.size (or, where the
        remote keeps one, of entry.hash): the caller uploads instead.
        """
        raise NotSupported(f"{self.NAME} cannot set a file's time without sending it")

    def symlink(self, target: str, path: str) -> None:
        """Only where capabilities.symlinks: make path a symlink to target
        (temp name, then rename), creating parents."""
        raise NotSupported(f"{self.NAME} cannot hold symlinks")

    @abstractmethod
    def mkdir(self, path: str) -> None:
        """Create a directory and its parents; an existing one is fine."""

    @abstractmethod
    def move(self, src: str, dst: str) -> None:
        """Server-side rename of a file or a directory; creates dst's parents;
        replaces an existing file at dst; never merges a directory into an
        existing one. Raises NotSupported where absent, NotFound when src is
        missing.
        """

    def move_many(self, pairs: list[tuple[str, str]]) -> None:
        """Move each file (src, dst). This default moves them one by one and
        takes a pair already moved (a replay after a crash: src gone, dst
        there) as done; S3's own moves every pair it can, then raises the
        first error (NotFound for a src gone), which apply then checks."""
        for src, dst in pairs:
            try:
                self.move(src, dst)
            except NotFound:
                if self.stat(dst) is None:
                    raise

    @abstractmethod
    def delete(self, path: str) -> None:
        """Remove one file; a missing one is fine."""

    def delete_many(self, paths: Iterable[str]) -> None:
        """Remove each file; missing ones are fine. This default deletes them one by one."""
        for path in paths:
            self.delete(path)

    @abstractmethod
    def rmdir(self, path: str) -> None:
        """Remove an empty directory; a missing one is fine."""

    @abstractmethod
    def download(
        self, path: str, local_path: "str | BinaryIO", progress: Progress | None = None, offset: int = 0,
        limit: int | None = None,
    ) -> Entry:
        """Write the remote file to local_path (appending from offset), or to
        an open file (restore opens its own, never through a symlink). limit:
        a file the server says is larger than this is refused before reading."""

    @abstractmethod
    def remove_temp_files(self, keep: frozenset[str] = frozenset()) -> int:
        """Remove what killed runs left behind (temp files, temp-named dirs,
        stale multipart uploads), except the resume handles in keep.
        Called only once the journal is finished. Returns how many.
        """

    # --- connections ---------------------------------------------------------------

    def net_stats(self) -> NetStats | None:
        """Connections, sessions and round trips so far (a forked child's
        added once it ends), where the remote counts them (SFTP, for -v);
        None where it does not."""
        return None

    def link_bound(self) -> bool:
        """True where the link's round trips, not this machine's CPU, limit
        many small uploads (measured on connecting): a second process
        (upload_child) would only add a connection. This default: False."""
        return False

    def delta_note(self) -> str | None:
        """-v: how a large file that changed travels here (delta transfer,
        blockmap.py), where capabilities.delta; None where it goes whole."""
        return None

    def forget_connections(self) -> None:
        """Only where capabilities.fork_safe, in a forked child: the parent's
        connections are not ours to use or close; the next call connects
        afresh. This default holds none."""

    def close(self) -> None:
        """Close connections and pools; the remote may be used again after."""


def local_output(local_path: "str | BinaryIO", offset: int) -> "ContextManager[BinaryIO]":
    """download's output: a path opened here, or the caller's open file (left open)"""
    if isinstance(local_path, (str, bytes, os.PathLike)):
        return open(local_path, "r+b" if offset else "wb")
    return contextlib.nullcontext(local_path)
