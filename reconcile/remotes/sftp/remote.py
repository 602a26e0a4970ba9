"""An SFTP server as the destination, over paramiko.

URL: sftp://[user@]host[:port]/path. The path is absolute on the server:
sftp://nas/backup/x is /backup/x. A path starting with /~ is relative to the
login directory: sftp://nas/~/backup is backup under the user's home.

Host, port, user and identity files also come from the ssh config
(~/.ssh/config, or the file named by RECONCILE_SSH_CONFIG or
options.extra["ssh_config"]), so Host aliases work as they do for ssh.

Each calling thread gets its own Transport and SFTPClient over its own socket
(sharing one client across threads can deadlock, paramiko issue 1836). After a
lost connection the thread's client is dropped and the next call reconnects.
Only this package imports paramiko; callers see reconcile.errors only.
"""

from __future__ import annotations

import errno
import secrets
import stat as st
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO, Iterable

from reconcile.entry import DIR, LINK, TEMP_MARK, Entry, decode_path, encode_path, is_temp_name, parent_of
from reconcile.errors import NotFound, Permanent, SourceChanged, Transient
from reconcile.blockmap import BlockStore
from reconcile.names import fold
from reconcile.remotes.base import Capabilities, Progress, Remote, RemoteOptions, local_output
from reconcile.remotes.fsprobe import DestFacts, recorded_facts, with_facts
from reconcile.remotes.sftp.batch import Batch
from reconcile.remotes.sftp.delta import tag_of
from reconcile.remotes.sftp.calls import (_entry, _lstat_or_none, _name, _readlink, _remove_quietly, _short,
                                          _wire_mtime)
from reconcile.remotes.sftp.listing import MAX_DEPTH, Listing
from reconcile.remotes.sftp.loader import paramiko
from reconcile.remotes.sftp.probe import probe_folder
from reconcile.remotes.sftp.session import Session, _Conn
from reconcile.remotes.sftp.target import _parse_url, _Target
from reconcile.remotes.sftp.upload import MAX_INFLIGHT_BYTES, Upload
from reconcile.remotes.sftp.wire import _Acks, _ask_read, _lstats, _mkdirs_then_lstat, _readdir


class SftpRemote(Session, Listing, Upload, Batch, Remote):
    NAME = "SFTP"
    CAPABILITIES = Capabilities(
        server_move=True, dir_move=True, empty_dirs=True,
        mtime_precision_ns=1_000_000_000, symlinks=True, set_mtime=True, delta=True, fork_safe=True,
        resumable=True,
    )

    def __init__(self, target: _Target, root: str, options: RemoteOptions, url: str) -> None:
        self.target = target
        self.root = root
        self.options = options
        self.url = url
        self.transfers = options.transfers or self.default_transfers
        self._fresh_connection_state()
        self._trusted_key: bytes | None = None
        self._secrets: dict[str, str | None] = {}
        self._seen_temps: list[str] | None = None  # temp names met by the last full list()
        self._left_temps: set[str] = set()  # temp files our failed uploads left
        self._dirs_seen: set[str] = set()  # folders upload_many made or found
        self._root_ready = False  # the destination root is known to exist
        self._root_missing = False  # the listing found no root (a first sync): made without asking first
        self._probe_saw_no_root = False  # this run's probe found no root: the listing's answer, once
        self._blocks = BlockStore(options.state_dir)  # block maps of large files, for deltas
        self._copy_data = bool(options.extra.get("sftp_copy_data", True))  # off: as a server without it
        self._capabilities: Capabilities | None = None

    @classmethod
    def from_url(cls, url: str, options: RemoteOptions) -> "SftpRemote":
        target, root, shown = _parse_url(url, options)
        return cls(target, root, options, shown)

    @property
    def capabilities(self) -> Capabilities:
        """what the server's disk keeps (a phone's exFAT card: one name for 'A'
        and 'a', no ':' in names, no symlinks): probed on first use, recorded
        in the state folder (probe.py)."""
        if self._capabilities is None:
            facts = recorded_facts(self.options.state_dir, self.url, "sftp", self._probe)
            self._capabilities = with_facts(self.CAPABILITIES, facts) if facts else self.CAPABILITIES
        return self._capabilities

    def _probe(self) -> DestFacts | None:
        if self.options.offline:
            return None  # planned from the last-known state: the server's disk is not asked
        with self._op(f"cannot check what {self.url} can hold"):
            self._lstats_with_init = [encode_path(p) for p in self._root_and_above()]  # if it opens a session
            try:
                sftp = self._sftp()
            finally:
                self._lstats_with_init = []
            folder = self._existing_folder(sftp)
            # a first sync: the listing that follows (within a few round trips) need not ask again
            self._probe_saw_no_root = folder is not None and folder != self.root  # a retried probe may see it
            if self._probe_saw_no_root:
                self._root_missing = True
                if self.options.sends and self.link_bound():
                    self.open_sessions_ahead(self.transfers - 1)  # every file will be sent
            return probe_folder(sftp, folder) if folder is not None else None

    def _existing_folder(self, sftp: paramiko.SFTPClient) -> str | None:
        """the root, or its nearest existing parent while it is still to be
        made (the lstats of all of them asked at once, or with the session's INIT)."""
        paths = self._root_and_above()
        for path, attr in zip(paths, _lstats(sftp, [encode_path(p) for p in paths])):
            if attr is not None:
                return path if st.S_ISDIR(attr.st_mode or 0) else None
        return None

    def _root_and_above(self) -> list[str]:
        """the root, then each folder above it, bottom up."""
        paths = [self.root]
        while True:
            path = paths[-1]
            up = path.rstrip("/").rpartition("/")[0]
            if up == path or not path.strip("/."):
                return paths
            paths.append(up or ("/" if path.startswith("/") else "."))

    # --- paths -------------------------------------------------------------

    def _abs(self, path: str) -> bytes:
        if not path:
            return encode_path(self.root)
        return encode_path(f"{self.root.rstrip('/')}/{path}" if self.root != "." else path)

    def _temp_for(self, path: str) -> str:
        """a name no one can guess ahead (a server user could otherwise plant a
        symlink there); a resumed upload finds its own in the journal."""
        head, _, name = path.rpartition("/")
        tmp = f"{TEMP_MARK}{secrets.token_hex(8)}-{_short(name)}"
        return f"{head}/{tmp}" if head else tmp

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max(4, self.transfers), thread_name_prefix="sftp")
            return self._pool

    def stat(self, path: str) -> Entry | None:
        with self._op(f"cannot stat {path}"):
            sftp = self._sftp()
            try:
                attr = sftp.lstat(self._abs(path))
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    return None
                raise
            e = _entry(path, attr)
            if e.kind == LINK:
                e.target = _readlink(sftp, self._abs(path))
            return e

    # --- writing -----------------------------------------------------------

    def mkdir(self, path: str) -> None:
        with self._op(f"cannot create folder {path}"):
            self._mkdirs(self._sftp(), path)

    def _mkdirs(self, sftp: paramiko.SFTPClient, path: str) -> None:
        if not path:
            self._make_root(sftp)
            return
        try:
            sftp.mkdir(self._abs(path))
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                self._mkdirs(sftp, parent_of(path))
                return self._mkdirs_retry(sftp, path)
            if exc.errno is not None:
                raise
            # "Failure": most often it exists already
            attr = _lstat_or_none(sftp, self._abs(path))
            if attr is None or not st.S_ISDIR(attr.st_mode or 0):
                raise Permanent(f"cannot create folder {path}: a file is in the way") from None

    def _make_root(self, sftp: paramiko.SFTPClient) -> None:
        """the destination root, created on demand like any other parent: each
        folder down to it asked at once (one round trip, not one per level);
        those that exist fail harmlessly, and so does another process making
        the same ones (the upload child)."""
        if self.root in ("", ".", "/"):
            return
        if not self._root_missing and _lstat_or_none(sftp, self._abs("")) is not None:
            return
        chain = [encode_path(p) for p in self._root_chain()]
        if _mkdirs_then_lstat(sftp, chain, self._abs("")) is not None:
            return
        for path in chain:  # a server that took them out of order: one at a time
            if _lstat_or_none(sftp, path) is None:
                try:
                    sftp.mkdir(path)
                except OSError:
                    if _lstat_or_none(sftp, path) is None:
                        raise

    def _root_chain(self) -> list[str]:
        """the root and each folder above it, top down."""
        absolute = self.root.startswith("/")
        chain, so_far = [], ""
        for part in [p for p in self.root.split("/") if p]:
            so_far = f"{so_far}/{part}" if so_far or absolute else part
            chain.append(so_far)
        return chain

    def _mkdirs_retry(self, sftp: paramiko.SFTPClient, path: str) -> None:
        try:
            sftp.mkdir(self._abs(path))
        except OSError as exc:
            attr = _lstat_or_none(sftp, self._abs(path))
            if attr is None or not st.S_ISDIR(attr.st_mode or 0):
                raise exc

    def touch(self, path: str, entry: Entry) -> None:
        """the file's mtime only, one SETSTAT (base.Remote.touch). SETSTAT
        follows a symlink: the file and the folders above it are checked first."""
        if entry.mtime_ns is None:
            return
        with self._op(f"cannot touch {path}"):
            sftp = self._sftp()
            attr = _lstat_or_none(sftp, self._abs(path))
            if attr is None or not st.S_ISREG(attr.st_mode or 0) or attr.st_size != entry.size:
                raise NotFound(f"cannot touch {path}: not the file the plan saw")
            self._refuse_links_above(sftp, path)
            secs = _wire_mtime(entry.mtime_ns)
            sftp.utime(self._abs(path), (secs, secs))
            self._blocks.retag(path, entry.size, tag_of(attr.st_size, (attr.st_mtime or 0) * 10**9),
                               tag_of(entry.size, secs * 10**9))

    def _replace(self, sftp: paramiko.SFTPClient, src: bytes, dst: bytes) -> None:
        """atomic overwrite; plain rename after a remove where posix-rename is missing."""
        try:
            sftp.posix_rename(src, dst)
            return
        except OSError as exc:
            if exc.errno is not None or "unsupported" not in str(exc).lower():
                raise
        _remove_quietly(sftp, dst)
        sftp.rename(src, dst)

    def symlink(self, target: str, path: str) -> None:
        tmp_rel = self._temp_for(path)
        with self._op(f"cannot link {path}"):
            sftp = self._sftp()
            tmp = self._abs(tmp_rel)
            _remove_quietly(sftp, tmp)
            try:
                sftp.symlink(encode_path(target), tmp)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
                self._mkdirs(sftp, parent_of(path))
                sftp.symlink(encode_path(target), tmp)
            self._replace(sftp, tmp, self._abs(path))

    def move(self, src: str, dst: str) -> None:
        with self._op(f"cannot move {src} to {dst}"):
            sftp = self._sftp()
            a, b = self._abs(src), self._abs(dst)
            if self._server_checks_move(sftp, src, dst) and _renamed(sftp, a, b):
                # one round trip, not two; the kind is not known here: a file's record and those below a folder
                self._blocks.moved(src, dst, folder=True)
                self._blocks.moved(src, dst)
                return
            above = _folders_above(dst)
            # every check in one round trip: the source, the target, each folder above the target
            attr, target, *folders = _lstats(sftp, [a, b, *map(self._abs, above)])
            if attr is None:
                raise NotFound(f"cannot move {src}: it does not exist")
            if st.S_ISDIR(attr.st_mode or 0) and target is not None and not self._case_only(src, dst):
                # a directory move never merges into an existing directory.
                raise Permanent(f"cannot move folder {src} to {dst}: target exists")
            _refuse_links(dst, above, folders)
            try:
                self._replace(sftp, a, b)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
                self._mkdirs(sftp, parent_of(dst))
                self._replace(sftp, a, b)
        # a rename keeps size and mtime, the record's tag
        self._blocks.moved(src, dst, folder=st.S_ISDIR(attr.st_mode or 0))

    def _server_checks_move(self, sftp: paramiko.SFTPClient, src: str, dst: str) -> bool:
        """a plain SFTP rename does this move's checks on the server: OpenSSH's
        never replaces a target (a file is linked then unlinked; anything else
        renamed only where nothing is at the target) and fails where the source
        is missing. Only where no folder above the target needs checking for a
        symlink (a name at the top), and not a case-only rename. Where it
        fails, the move is checked and made as before, with its own message."""
        return ("/" not in dst and not self._case_only(src, dst)
                and sftp.get_channel().get_transport().remote_version.startswith("SSH-2.0-OpenSSH"))

    def _case_only(self, src: str, dst: str) -> bool:
        """Readme -> README on a disk that holds both as one name: a rename, not a merge"""
        return self.capabilities.case_insensitive and src != dst and fold(src) == fold(dst)

    def _refuse_links_above(self, sftp: paramiko.SFTPClient, path: str, what: str = "cannot move to") -> None:
        """the server renames and removes through a symlinked folder (the trash,
        or a folder the listing saw, swapped for a link): check each folder above
        path first. SFTP has no openat, so a swap right after this check stays
        possible; a link planted before it does not."""
        above = _folders_above(path)
        _refuse_links(path, above, _lstats(sftp, [self._abs(p) for p in above]), what)

    def delete(self, path: str) -> None:
        with self._op(f"cannot delete {path}"):
            sftp = self._sftp()
            self._refuse_links_above(sftp, path, "cannot delete")  # a top-level name costs nothing
            self._remove(sftp, path)

    def delete_many(self, paths: Iterable[str]) -> None:
        """the folders above every path checked at once (one round trip), then
        each file removed"""
        paths = list(paths)
        above = sorted({f for p in paths for f in _folders_above(p)}, key=lambda f: f.count("/"))
        what = paths[0] if len(paths) == 1 else f"{len(paths)} files"
        with self._op(f"cannot delete {what}"):
            _refuse_links(what, above, _lstats(self._sftp(), [self._abs(f) for f in above]), "cannot delete")
        for path in paths:
            with self._op(f"cannot delete {path}"):
                self._remove(self._sftp(), path)

    def _remove(self, sftp: paramiko.SFTPClient, path: str) -> None:
        try:
            sftp.remove(self._abs(path))
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return
            attr = _lstat_or_none(sftp, self._abs(path))
            if attr is not None and st.S_ISDIR(attr.st_mode or 0):
                raise Permanent(f"cannot delete {path}: it is a folder") from None
            raise

    def rmdir(self, path: str) -> None:
        with self._op(f"cannot remove folder {path}"):
            try:
                self._sftp().rmdir(self._abs(path))
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise

    # --- reading -----------------------------------------------------------

    def download(self, path: str, local_path: str | BinaryIO, progress: Progress | None = None,
                 offset: int = 0, limit: int | None = None) -> Entry:
        try:
            output = local_output(local_path, offset)
        except OSError as exc:
            raise NotFound(f"cannot write local file {local_path}: {exc.strerror}") from None
        with output as out, self._op(f"cannot read {path}", failure=Transient):
            sftp = self._sftp()
            with sftp.open(self._abs(path), "rb") as f:
                size = f.stat().st_size or 0
                if limit is not None and size > limit:
                    # a server's fstat is not trusted to make us read more than the listing said
                    raise SourceChanged(f"{path} is {size} bytes on the server, not the {limit} listed")
                out.truncate(offset)
                out.seek(offset)
                self._fetch_range(self._conn(), f.handle, out, offset, size, progress)
        e = self.stat(path)
        if e is None:
            raise NotFound(f"{path} vanished during download")
        return e

    def _fetch_range(self, conn: _Conn, handle: bytes, out, pos: int, end: int,
                     progress: Progress | None) -> None:
        """pipelined reads of [pos, end) written to out in order; a short read
        is followed up before going on."""
        sftp = conn.sftp
        acks = _Acks(sftp)
        pending: deque[tuple[int, int, int]] = deque()  # (request, offset, length)
        sent = pos
        while sent < end or pending:
            while sent < end and len(pending) * conn.read_chunk < MAX_INFLIGHT_BYTES:
                n = min(conn.read_chunk, end - sent)
                pending.append((_ask_read(sftp, acks, handle, sent, n), sent, n))
                sent += n
            num, offset, n = pending.popleft()
            data = acks.wait(num)
            if isinstance(data, EOFError):
                raise SourceChanged("the remote file shrank while it was read")
            if isinstance(data, BaseException):
                raise data
            if len(data) > n:
                raise Permanent(f"the server sent {len(data)} bytes for a read of {n}")
            _local_write(out, data, out.name)
            if progress:
                progress(len(data))
            if len(data) < n:
                # a short read: drain the queue, then carry on from here
                for later, _, _ in pending:
                    acks.wait(later)
                pending.clear()
                sent = offset + len(data)
                out.seek(sent)

    # --- cleanup -----------------------------------------------------------

    def remove_temp_files(self, keep: frozenset[str] = frozenset()) -> int:
        temps = self._seen_temps if self._seen_temps is not None else self._find_temps("")
        count = 0
        for rel in dict.fromkeys([*temps, *self._left_temps]):
            if rel in keep or _name(rel) in keep:
                continue
            with self._op(f"cannot remove {rel}"):
                if self._remove_tree(self._sftp(), rel):
                    count += 1
        self._seen_temps = None
        self._left_temps.clear()
        return count

    def _find_temps(self, rel: str) -> list[str]:
        """temp names below rel, folders walked with a stack of our own (a tree
        deeper than MAX_DEPTH, made by someone else, is not followed)"""
        found, folders = [], [(rel, 0)]
        while folders:
            folder, depth = folders.pop()
            for e in self._read_dir(folder):
                if is_temp_name(_name(e.path)):
                    found.append(e.path)
                elif e.kind == DIR and depth < MAX_DEPTH:
                    folders.append((e.path, depth + 1))
        return sorted(found)

    def _remove_tree(self, sftp: paramiko.SFTPClient, rel: str) -> bool:
        """true when something was there to remove. A temp-named folder holding
        a tree deeper than MAX_DEPTH (not ours: someone who can write the
        destination made it) is left as it is."""
        attr = _lstat_or_none(sftp, self._abs(rel))
        if attr is None:
            return False
        if not st.S_ISDIR(attr.st_mode or 0):
            _remove_quietly(sftp, self._abs(rel))
            return True
        files, dirs, todo = [], [], [(rel, 0)]
        while todo:
            folder, depth = todo.pop()
            if depth > MAX_DEPTH:
                return True
            dirs.append(folder)
            for name, mode, *_ in _readdir(sftp, self._abs(folder)):
                path = f"{folder}/{decode_path(name)}"
                if not mode:  # a server that sent no permissions: ask
                    attr = _lstat_or_none(sftp, self._abs(path))
                    mode = attr.st_mode if attr is not None else 0
                if st.S_ISDIR(mode or 0):
                    todo.append((path, depth + 1))
                else:
                    files.append(path)
        for path in files:
            _remove_quietly(sftp, self._abs(path))
        for folder in reversed(dirs):  # a folder comes after every folder above it: deepest first
            sftp.rmdir(self._abs(folder))
        return True

    def delta_note(self) -> str:
        if not self._copy_data:
            return "sent whole (copy-data is off: sftp_copy_data, or the server refused it)"
        return ("only their changed blocks are sent, the rest copied on the server with copy-data "
                "(OpenSSH 9.0 or later; a server without it gets whole files)")

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self.close_sessions()


# --- helpers on one SFTPClient ----------------------------------------------


def _renamed(sftp: paramiko.SFTPClient, src: bytes, dst: bytes) -> bool:
    """SFTP's plain rename (never over an existing target): False where the server refused it."""
    try:
        sftp.rename(src, dst)
    except OSError:
        return False  # the checked move says why (a lost connection: it fails there too)
    return True


def _folders_above(path: str) -> list[str]:
    """a/b/c -> [a, a/b]"""
    parts = path.split("/")[:-1]
    return ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]


def _refuse_links(path: str, above: list[str], attrs: list, what: str = "cannot move to") -> None:
    """a symlink among the folders above path (their lstats, top down; or above
    many paths, shallowest first) is refused. A missing folder is no link (a
    move's _mkdirs makes it, and never follows one)."""
    for folder, attr in zip(above, attrs):
        if attr is not None and st.S_ISLNK(attr.st_mode or 0):
            raise Permanent(f"{what} {path}: {folder} on the server is a symlink; "
                            "reconcile never writes through one")


def _local_write(out, chunk: bytes, local_path: str) -> None:
    try:
        out.write(chunk)
    except OSError as exc:
        raise Permanent(f"cannot write local file {local_path}: {exc.strerror}") from None
