"""The small interface every remote implements (local.py, sftp/, s3.py).

Paths given to a remote are relative POSIX paths under its root, never empty
for files, never starting with '/', never containing '..' components.
Methods may be called from several threads at once: a remote keeps whatever
per-thread connections it needs.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field, fields
from typing import BinaryIO, Callable, ContextManager, Iterator, Protocol

from reconcile.entry import Entry

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
    empty_dirs: bool = True  # directories exist on their own (not on S3)
    case_insensitive: bool = False
    mtime_precision_ns: int = 1  # 1_000_000_000 on SFTP; probed on a local folder (fsprobe.py)
    symlinks: bool = False
    # what a local folder's file system allows (fsprobe.py; names.py applies them)
    fs_type: str = ""  # exfat, vfat, ntfs, ext4...: named in messages
    windows_names: bool = False  # no : ? * " < > | \, no CON or NUL..., no trailing dot or space
    max_file_size: int | None = None  # FAT32: 4 GiB - 1
    mtime_range: tuple[int, int] | None = None  # FAT and exFAT: 1980 to 2107, in ns


@dataclass
class Sent(Entry):
    """what upload() returns: the entry now on the remote, and how many of its
    bytes were copied on the remote from its old version instead of sent"""

    reused: int = 0


def as_sent(entry: Entry, reused: int = 0) -> Sent:
    return Sent(**{f.name: getattr(entry, f.name) for f in fields(Entry)}, reused=reused)


@dataclass
class RemoteOptions:
    """Everything a remote may need, from flags or the config file.

    Secrets are never stored here: they come from the environment or agents.
    """

    transfers: int | None = None  # parallel transfers; None: the remote's default
    state_dir: str | None = None  # private folder a remote may keep records in
    retry_for: float = 300.0
    expected_entries: int = 0  # about how many entries the last run saw: a listing may pick its way by it
    # sftp
    ssh_key: str | None = None
    known_hosts: str | None = None
    accept_new_host_key: bool = False
    # s3
    s3_endpoint: str | None = None
    profile: str | None = None
    storage_class: str | None = None
    sse: str | None = None
    sse_kms_key_id: str | None = None
    extra: dict = field(default_factory=dict)


class Remote(Protocol):
    url: str  # for display: never holds a secret
    capabilities: Capabilities

    def list(self) -> Iterator[Entry]:
        """Every entry under the root (files and directories, not the root),
        in entry.sort_key order, hiding our own temp names (entry.TEMP_MARK).

        Raises NotFound when the root itself does not exist.
        """

    def stat(self, path: str) -> Entry | None:
        """The entry at path, or None."""

    def upload(
        self,
        local_path: str,
        path: str,
        entry: Entry,
        progress: Progress | None = None,
        resume: dict | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> Entry:
        """Send local_path to path, creating parents. Never visible under its
        real name until complete (temp name, then rename). Sets the remote
        mtime to entry.mtime_ns and stores entry.hash where the remote can.
        Returns the entry as now on the remote.
        """

    def touch(self, path: str, entry: Entry) -> None:
        """Only where capabilities.set_mtime: set the mtime of the file at path
        (which holds entry's content) to entry.mtime_ns, sending no content.
        Raises NotFound when path is not a file of entry.size (or, where the
        remote keeps one, of entry.hash): the caller uploads instead.
        """

    def mkdir(self, path: str) -> None:
        """Create a directory and its parents; an existing one is fine."""

    def move(self, src: str, dst: str) -> None:
        """Server-side rename of a file or a directory; creates dst's parents;
        replaces an existing file at dst. Raises NotSupported where absent,
        NotFound when src is missing.
        """

    def delete(self, path: str) -> None:
        """Remove one file; a missing one is fine."""

    def rmdir(self, path: str) -> None:
        """Remove an empty directory; a missing one is fine."""

    def download(
        self, path: str, local_path: "str | BinaryIO", progress: Progress | None = None, offset: int = 0,
        limit: int | None = None,
    ) -> Entry:
        """Write the remote file to local_path (appending from offset), or to
        an open file (restore opens its own, never through a symlink). limit:
        a file the server says is larger than this is refused before reading."""

    def remove_temp_files(self, keep: frozenset[str] = frozenset()) -> int:
        """Remove what killed runs left behind (temp files, temp-named dirs,
        stale multipart uploads), except the resume handles in keep.
        Called only once the journal is finished. Returns how many.
        """

    def close(self) -> None: ...


def local_output(local_path: "str | BinaryIO", offset: int) -> "ContextManager[BinaryIO]":
    """download's output: a path opened here, or the caller's open file (left open)"""
    if isinstance(local_path, (str, bytes, os.PathLike)):
        return open(local_path, "r+b" if offset else "wb")
    return contextlib.nullcontext(local_path)
