"""A local (or mounted) folder as the destination: the embedded default."""

from __future__ import annotations

import errno
import os
import shutil
import stat as st
import uuid
from functools import partial
from itertools import chain
from typing import BinaryIO, Callable, Iterator

from reconcile import forked, names, portable, safepath
from reconcile.diff import clamp_mtime
from reconcile.entry import (DIR, FILE, LINK, TEMP_MARK, Entry, decode_path, encode_path, entry_of, is_temp_name,
                             row_of)
from reconcile.errors import ConfigError, DestinationFull, NotFound, Permanent, SourceChanged, Transient
from reconcile.excludes import TEMP_MARK_B
from reconcile.hashing import FileHasher
from reconcile.blockmap import BlockMap, BlockStore, block_hash, runs
from reconcile.remotes.base import (Capabilities, Checkpoint, Progress, Remote, RemoteOptions, Sent, as_sent,
                                    local_output)
from reconcile.remotes.fsprobe import facts_for, with_facts
from reconcile.walk import FD_STAT, S_IFDIR, S_IFLNK, S_IFMT, Listing

CHUNK = 1 << 20
# File systems where copy_file_range shares the old file's blocks (a reflink)
# or copies on the server (NFS 4.2, SMB): there a delta costs little. On the
# others (ext4, exFAT, NTFS...) it would write as much as a full copy and read
# the old copy and the new one besides, so files go whole.
CHEAP_COPY_FS = frozenset({"btrfs", "xfs", "zfs", "bcachefs", "ocfs2", "nfs", "nfs4", "cifs", "smb3"})
DELTA_ANYWHERE = "RECONCILE_TEST_LOCAL_DELTA"  # "1": deltas on any file system (the tests run on ext4)
PATH_MAX = 32767 if portable.WINDOWS else 4096  # Windows: with the \\?\ prefix (portable.native)
TEMP_NAME_EXTRA = 1 + len(TEMP_MARK) + 13  # "/", the mark, 12 hex digits and "-"


def _map_oserror(exc: OSError, what: str) -> Exception:
    if isinstance(exc, safepath.SymlinkInPath):
        return Permanent(f"{what}: {exc.strerror}")
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return NotFound(f"{what}: {exc.strerror}")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DestinationFull(f"{DestinationFull.WHY} ({what}: {exc.strerror}): free space on it, then run again")
    if exc.errno in (errno.EIO, errno.ESTALE, errno.ETIMEDOUT):
        # a flaky mount may recover; the journal keeps the rest.
        return Transient(f"{what}: {exc.strerror}")
    return Permanent(f"{what}: {exc.strerror}")


class LocalRemote(Remote):
    NAME = "a local folder"
    CAPABILITIES = Capabilities(
        server_move=True, dir_move=True, empty_dirs=True, symlinks=True, set_mtime=True,
        delta=True, name_encoding=True,
    )

    def __init__(self, root: str, options: RemoteOptions | None = None) -> None:
        self.url = os.path.abspath(root)
        self.root = portable.native(self.url)
        self.options = options or RemoteOptions()
        self._umask = current_umask()
        self._capabilities: Capabilities | None = None
        # --name-encoding: names stored as rclone stores them on Windows (names.py)
        self._stored = names.to_stored if self.options.extra.get("name_encoding") else None
        self._blocks = BlockStore(self.options.state_dir)

    @property
    def capabilities(self) -> Capabilities:
        """what this folder's file system keeps (mtime precision, case, names):
        probed on first use, recorded in the state folder."""
        if self._capabilities is None:
            self._capabilities = with_facts(self.CAPABILITIES, facts_for(self.root, self.options.state_dir))
        return self._capabilities

    @classmethod
    def from_url(cls, url: str, options: RemoteOptions) -> "LocalRemote":
        from reconcile.remotes import local_path

        root = os.path.expanduser(local_path(url))
        if os.path.exists(root) and not os.path.isdir(root):
            raise ConfigError(f"destination {root!r} is a file, not a folder: give a folder path")
        return cls(root, options)

    def _abs(self, path: str) -> str:
        if self._stored is not None and path:
            path = self._stored(path)
        return os.path.join(self.root, *path.split("/")) if path else self.root

    def list(self) -> Iterator[Entry]:
        self._check_root()
        for run in self._runs():
            for row in run:
                yield entry_of(row)

    def list_rows(self, fork: bool = True) -> Iterator[tuple]:
        """the listing as rows (entry.row_of). With fork, a child process
        lists while this one walks the source and merges: two cores, as
        rsync's two ends."""
        if type(self).list is not LocalRemote.list:
            return map(row_of, self.list())  # a subclass that lists its own way
        self._check_root()
        if fork and forked.available():
            return forked.rows(self._runs)
        return chain.from_iterable(self._runs())

    def _check_root(self) -> None:
        if not os.path.isdir(self.root):
            raise NotFound(f"destination folder {self.url} does not exist")

    def _runs(self) -> Iterator[list[tuple]]:
        """the rows in order, a run of one folder's listing at a time, as walk.py does."""
        root = os.fsencode(self.root)
        shown = _source_name if self._stored is not None else None
        stack = [_list_dir(root, b"", shown)]
        while stack:
            listing = stack[-1]
            j = listing.next_dir()
            if j is None:
                stack.pop()
                yield listing.rows[listing.start:]
                continue
            yield listing.rows[listing.start:j + 1]
            listing.start = j + 1
            key = listing.rows[j][0]
            try:
                stored = key[:-1] if shown is None else encode_path(names.to_stored(decode_path(key[:-1])))
                stack.append(_list_dir(os.path.join(root, stored), key, shown))
            except NotFound:
                continue  # removed since its parent was read: nothing below it to compare

    def _parent(self, path: str, create: bool = False) -> safepath.Parent:
        """path's folder, reached from the root without following a symlink"""
        # descriptors would let us write a path no other tool (nor our own
        # listing) can reach by name: keep to the kernel's cap, temp name included
        if len(os.fsencode(self.root)) + len(encode_path(path)) + (TEMP_NAME_EXTRA if create else 1) >= PATH_MAX:
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), path)
        if self._stored is not None and path:
            path = self._stored(path)
        return safepath.open_parent(self.root, path, create)

    def stat(self, path: str) -> Entry | None:
        try:
            if not path:
                s = os.lstat(self.root)
            else:
                with self._parent(path) as p:
                    s = os.lstat(p.target, dir_fd=p.fd)
        except (FileNotFoundError, NotADirectoryError, safepath.SymlinkInPath):
            return None  # not there, or only through a symlink: not ours
        except OSError as exc:
            raise _map_oserror(exc, f"cannot stat {path}") from None
        kind = DIR if st.S_ISDIR(s.st_mode) else LINK if st.S_ISLNK(s.st_mode) else FILE
        return Entry(path, kind, s.st_size if kind == FILE else 0, s.st_mtime_ns, s.st_ino, s.st_dev, s.st_mode)

    @staticmethod
    def _temp_name(name: str) -> str:
        """a temp name beside name (as stored) in its folder"""
        return f"{TEMP_MARK}{uuid.uuid4().hex[:12]}-{name[:100]}"

    def upload(self, local_path: str, path: str, entry: Entry, progress: Progress | None = None,
               resume: dict | None = None, checkpoint: Checkpoint | None = None) -> Sent:
        try:
            src = open(local_path, "rb")
        except OSError as exc:
            raise NotFound(f"local file {local_path} vanished: {exc.strerror}") from None
        reused, bmap = None, None
        try:
            with src, self._parent(path, create=True) as parent:
                if self._delta_pays():
                    bmap = self._blocks.map_new(src.fileno(), os.fstat(src.fileno()).st_size, entry.hash, path,
                                                taken=entry.block_map)
                if bmap is not None:
                    reused = self._try_delta(parent, src.fileno(), path, entry, bmap, progress)
                if reused is None:
                    reused = 0
                    self._write_new(parent, self._temp_name(parent.name), src.fileno(), path, entry,
                                    partial(_copy_fd, progress=progress))
        except OSError as exc:
            raise _map_oserror(exc, f"cannot write {path}") from None
        result = self.stat(path)
        assert result is not None
        if bmap is not None:
            self._blocks.put(path, bmap, _tag(result))
        return as_sent(result, reused)

    def _delta_pays(self) -> bool:
        return self.capabilities.fs_type in CHEAP_COPY_FS or os.environ.get(DELTA_ANYWHERE) == "1"

    def delta_note(self) -> str:
        fs = self.capabilities.fs_type or "this file system"
        if self._delta_pays():
            return f"only their changed blocks are written, the rest shared or copied by {fs} (copy_file_range)"
        return (f"copied whole ({fs} has no reflink: a delta would write as much as a full copy; "
                "deltas on Btrfs, XFS, ZFS, NFS 4.2, SMB)")

    def _try_delta(self, parent: safepath.Parent, src: int, path: str, entry: Entry, bmap: BlockMap,
                   progress: Progress | None) -> int | None:
        """bytes reused from the old file, the new one in place; None: send it whole"""
        known = self._blocks.reusable(path, bmap)
        if known is None:
            return None
        flags, _, tag = known
        try:
            old = safepath.open_file(parent, parent.name, os.O_RDONLY)
        except OSError:
            return None  # gone, or a symlink now: send it whole
        try:
            if _tag(os.fstat(old)) != tag:
                return None  # changed behind our back since the blocks were recorded
            stretches = runs(flags, bmap.block, bmap.size)
            try:
                self._write_new(parent, self._temp_name(parent.name), src, path, entry,
                                partial(_fill_delta, old=old, stretches=stretches, bmap=bmap, progress=progress))
            except _NotTheBlocks:
                return None  # the old file no longer holds what we recorded: the temp is gone, send it whole
        finally:
            os.close(old)
        return sum(n for _, n, same in stretches if same)

    def _write_new(self, parent: safepath.Parent, tmp: str, src: int, path: str, entry: Entry,
                   fill: Callable[[int, int], None]) -> None:
        """the file under tmp (new, 0600 while written by fill(src, dst)), then renamed to its name"""
        dst = safepath.create_exclusive(parent, tmp)
        try:
            try:
                before = os.fstat(src)
                fill(src, dst)
                os.fsync(dst)
                after = os.fstat(src)
                if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
                    # never put a mix of two versions under the real name
                    raise SourceChanged(f"{path} changed while being copied; left for the next run")
                if entry.mtime_ns is not None:
                    t = self._stored_mtime(entry.mtime_ns)
                    os.utime(dst, ns=(t, t))
                os.chmod(dst, final_mode(entry.mode, bool(self.options.extra.get("perms")), self._umask))
            finally:
                os.close(dst)
            os.replace(parent.of(tmp), parent.target, src_dir_fd=parent.fd, dst_dir_fd=parent.fd)
        except BaseException:
            _remove_quietly(parent, tmp)
            raise

    def _stored_mtime(self, ns: int) -> int:
        span = self.capabilities.mtime_range  # FAT, exFAT: a time out of it is stored clamped
        return ns if span is None else clamp_mtime(ns, span)

    def touch(self, path: str, entry: Entry) -> None:
        """the file's mtime only, never through a symlink (base.Remote.touch)"""
        if entry.mtime_ns is None:
            return
        t = self._stored_mtime(entry.mtime_ns)
        try:
            with self._parent(path) as p:
                s = os.lstat(p.target, dir_fd=p.fd)
                if not st.S_ISREG(s.st_mode) or s.st_size != entry.size:
                    raise NotFound(f"cannot touch {path}: not the file the plan saw")
                # lstat said a regular file; never follow a link swapped in since
                nofollow = {"dir_fd": p.fd, "follow_symlinks": False} if p.fd is not None else {}
                os.utime(p.target, ns=(t, t), **nofollow)
                self._blocks.retag(path, s.st_size, _tag(s), _tag(os.lstat(p.target, dir_fd=p.fd)))
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"cannot touch {path}: it is gone") from None
        except OSError as exc:
            raise _map_oserror(exc, f"cannot touch {path}") from None

    def symlink(self, target: str, path: str) -> None:
        try:
            with self._parent(path, create=True) as p:
                tmp = self._temp_name(p.name)
                try:
                    os.symlink(target, p.of(tmp), dir_fd=p.fd)
                    os.replace(p.of(tmp), p.target, src_dir_fd=p.fd, dst_dir_fd=p.fd)
                except OSError:
                    _remove_quietly(p, tmp)
                    raise
        except OSError as exc:
            raise _map_oserror(exc, f"cannot link {path}") from None

    def mkdir(self, path: str) -> None:
        try:
            made = safepath.open_dir(self.root, path, create=True)
            if isinstance(made, int):
                os.close(made)
        except OSError as exc:
            raise _map_oserror(exc, f"cannot create folder {path}") from None

    def move(self, src: str, dst: str) -> None:
        try:
            with self._parent(src) as a:
                is_dir = st.S_ISDIR(os.lstat(a.target, dir_fd=a.fd).st_mode)
                with self._parent(dst, create=True) as b:
                    if is_dir:
                        # a directory move never merges into an existing directory.
                        if _lexists(b) and not self._case_only(src, dst):
                            raise Permanent(f"cannot move folder {src} to {dst}: target exists")
                        os.rename(a.target, b.target, src_dir_fd=a.fd, dst_dir_fd=b.fd)
                    else:
                        os.replace(a.target, b.target, src_dir_fd=a.fd, dst_dir_fd=b.fd)
        except OSError as exc:
            raise _map_oserror(exc, f"cannot move {src} to {dst}") from None
        self._blocks.moved(src, dst, folder=is_dir)  # a rename keeps size, mtime and inode: its tag

    def _case_only(self, src: str, dst: str) -> bool:
        """Readme -> README on a disk that holds both as one name: a rename, not a merge"""
        return self.capabilities.case_insensitive and src != dst and names.fold(src) == names.fold(dst)

    def delete(self, path: str) -> None:
        try:
            with self._parent(path) as p:
                os.unlink(p.target, dir_fd=p.fd)
        except (FileNotFoundError, NotADirectoryError):
            pass
        except IsADirectoryError:
            raise Permanent(f"cannot delete {path}: it is a folder") from None
        except OSError as exc:
            raise _map_oserror(exc, f"cannot delete {path}") from None

    def rmdir(self, path: str) -> None:
        try:
            with self._parent(path) as p:
                os.rmdir(p.target, dir_fd=p.fd)
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as exc:
            raise _map_oserror(exc, f"cannot remove folder {path}") from None

    def download(self, path: str, local_path: str | BinaryIO, progress: Progress | None = None,
                 offset: int = 0, limit: int | None = None) -> Entry:
        try:
            with self._parent(path) as p:
                fd = safepath.open_file(p, p.name, os.O_RDONLY)
            with os.fdopen(fd, "rb") as f, local_output(local_path, offset) as out:
                size = os.fstat(f.fileno()).st_size
                if limit is not None and size > limit:
                    raise SourceChanged(f"{path} is {size} bytes, not the {limit} listed")
                f.seek(offset)
                out.seek(offset)
                while chunk := f.read(CHUNK):
                    out.write(chunk)
                    if progress:
                        progress(len(chunk))
        except OSError as exc:
            raise _map_oserror(exc, f"cannot read {path}") from None
        e = self.stat(path)
        if e is None:
            raise NotFound(f"{path} vanished during download")
        return e

    def remove_temp_files(self, keep: frozenset[str] = frozenset()) -> int:
        """our temp files and folders anywhere below the root: found by a walk
        that keeps its own stack (a tree thousands of folders deep ended os.walk
        in a RecursionError), removed through safepath (never via a symlink)"""
        count = 0
        stack = [""]
        while stack:
            rel = stack.pop()
            try:
                with os.scandir(os.path.join(self.root, *rel.split("/")) if rel else self.root) as it:
                    found = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
            except OSError:
                continue  # gone since, or not a folder now
            for name, is_dir in found:
                path = f"{rel}/{name}" if rel else name
                if is_temp_name(name):
                    count += 1
                    self._remove_temp(path, is_dir)
                elif is_dir:
                    stack.append(path)
        return count

    def _remove_temp(self, path: str, is_dir: bool) -> None:
        try:
            with safepath.open_parent(self.root, path) as p:
                if is_dir:
                    shutil.rmtree(p.target, dir_fd=p.fd)
                else:
                    os.unlink(p.target, dir_fd=p.fd)
        except OSError:
            pass  # gone, or only reachable through a symlink now: not ours to remove
        except RecursionError:
            # shutil.rmtree recurses (Python 3.11, 3.12): a temp-named folder holding a tree about
            # a thousand folders deep, made by anyone who can write the destination, is left as it is
            pass

    def close(self) -> None:
        pass


def _source_name(stored: bytes) -> bytes:
    return encode_path(names.decode_name(decode_path(stored)))


def _list_dir(abspath: bytes, prefix: bytes, shown: Callable[[bytes], bytes] | None = None) -> Listing:
    """the sorted rows of one folder, our temp names left out; shown(name)
    is the source name a stored name stands for, under --name-encoding."""
    rows = []
    dirs = []
    append = rows.append
    lstat = os.lstat
    try:
        fd = os.open(abspath, os.O_RDONLY | os.O_DIRECTORY) if FD_STAT else None
        base = b"" if fd is not None else os.path.join(abspath, b"")
        try:
            for name in os.listdir(abspath):
                if TEMP_MARK_B in name:
                    continue
                try:
                    s = lstat(base + name, dir_fd=fd)
                except FileNotFoundError:
                    continue
                mode = s.st_mode
                fmt = mode & S_IFMT
                key = prefix + (name if shown is None else shown(name))
                if fmt == S_IFDIR:
                    dirs.append(key + b"/")
                    append((dirs[-1], DIR, 0, s.st_mtime_ns, s.st_ino, s.st_dev, mode, None, None, None))
                elif fmt == S_IFLNK:
                    append((key, LINK, 0, s.st_mtime_ns, s.st_ino, s.st_dev, mode, None,
                            _readlink(os.path.join(abspath, name)), None))
                else:  # files, and specials listed as files as they always were
                    append((key, FILE, s.st_size, s.st_mtime_ns, s.st_ino, s.st_dev, mode,
                            None, None, None))
        finally:
            if fd is not None:
                os.close(fd)
    except OSError as exc:
        raise _map_oserror(exc, f"cannot list {os.fsdecode(abspath)}") from None
    return Listing.sorted(rows, dirs)


def _readlink(path: bytes) -> str | None:
    try:
        return os.fsdecode(os.readlink(path))
    except OSError:
        return None


def _copy_fd(src: int, dst: int, progress: Progress | None = None) -> None:
    """kernel-side copy where the OS has one; a plain loop elsewhere."""
    if portable.SENDFILE:
        offset = 0
        while True:
            try:
                n = os.sendfile(dst, src, offset, 1 << 23)
            except OSError:
                if offset == 0:
                    break  # not supported here: fall back below
                raise
            if n == 0:
                return
            offset += n
            if progress:
                progress(n)
        os.lseek(src, 0, os.SEEK_SET)
    else:
        portable.used["copy_loop"] += 1
    while chunk := os.read(src, CHUNK):
        os.write(dst, chunk)
        if progress:
            progress(len(chunk))



class _NotTheBlocks(Exception):
    """the file put together from reused and sent blocks is not the new version"""


def _fill_delta(src: int, dst: int, old: int, stretches: list[tuple[int, int, bool]], bmap: BlockMap,
                progress: Progress | None) -> None:
    """dst from the old file's unchanged stretches (copy_file_range: a reflink
    where the file system shares blocks) and src's changed blocks; then read
    back whole and checked against the new version's xxh3."""
    for offset, length, same in stretches:
        if same:
            _copy_range(old, dst, offset, length)
            continue
        for pos in range(offset, offset + length, bmap.block):
            n = min(bmap.block, offset + length - pos)
            data = portable.pread(src, n, pos)
            if len(data) != n or block_hash(data) != bmap.blocks[pos // bmap.block]:
                raise SourceChanged("the file changed while being copied; left for the next run")
            portable.pwrite(dst, data, pos)
            if progress:
                progress(n)
    if _read_back(dst, bmap) != bmap.digest:
        raise _NotTheBlocks()


def _read_back(dst: int, bmap: BlockMap) -> bytes | None:
    """the xxh3 of the file put together, read back whole (the issue's rule:
    never renamed into place unverified; on a reflink file system this read,
    at the disk's speed, is most of a delta's time). One hash, not a block
    map: the map is the source's, known already. None: it is short."""
    return FileHasher(dst, bmap.size).digest()


def _copy_range(src: int, dst: int, offset: int, length: int) -> None:
    """src[offset:offset+length] to the same place in dst, in the kernel where it can"""
    end = offset + length
    pos = offset
    if portable.COPY_RANGE:
        try:
            while pos < end:
                n = os.copy_file_range(src, dst, end - pos, pos, pos)
                if n == 0:
                    raise _NotTheBlocks()  # the old file is shorter than recorded
                pos += n
            return
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
    while pos < end:
        data = portable.pread(src, min(CHUNK, end - pos), pos)
        if not data:
            raise _NotTheBlocks()
        portable.pwrite(dst, data, pos)
        pos += len(data)


def _tag(s: "os.stat_result | Entry") -> dict:
    """which file a block map describes: size, mtime and inode"""
    if isinstance(s, Entry):
        return {"size": s.size, "mtime_ns": s.mtime_ns, "ino": s.inode}
    return {"size": s.st_size, "mtime_ns": s.st_mtime_ns, "ino": s.st_ino}


def _remove_quietly(parent: safepath.Parent, name: str) -> None:
    try:
        os.unlink(parent.of(name), dir_fd=parent.fd)
    except OSError:
        pass


def _lexists(p: safepath.Parent) -> bool:
    try:
        os.lstat(p.target, dir_fd=p.fd)
    except FileNotFoundError:
        return False
    return True


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def final_mode(source_mode: int | None, keep_exactly: bool, umask: int) -> int:
    """the mode a sent file gets: the source's bits masked by the umask, as
    rsync without -p; with --perms exactly the source's"""
    bits = st.S_IMODE(source_mode) if source_mode else 0o666
    return bits if keep_exactly else bits & ~umask & 0o777


