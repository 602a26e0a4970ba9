"""What the disk behind an SFTP server keeps, found out by trying it.

A phone's SD card or a NAS sharing a USB disk is often exFAT or FAT32 behind
the server: 'A' and 'a' are one name there, ':' and '?' cannot be stored,
symlinks cannot be made and FAT keeps times to 2 s. The server does not say
so; a probe file in the destination folder does, once per destination (the
facts are kept in the remote's state folder, as for a local disk: fsprobe.py).
"""

from __future__ import annotations

import uuid

from reconcile.entry import TEMP_MARK
from reconcile.remotes.fsprobe import FAT_EPOCH_NS, FAT_END_NS, SECOND, DestFacts
from reconcile.remotes.sftp.loader import paramiko

SERVER_DISK = "the server's disk"  # named in messages: the file system type is not known over SFTP
PROBE_SECONDS = 1_600_000_001  # an odd second: FAT keeps only even ones


def probe_folder(sftp: paramiko.SFTPClient, folder: str) -> DestFacts | None:
    """the facts of folder's disk, from a probe file written there and
    removed; None when no file can be written there (nothing is assumed)."""
    tag = uuid.uuid4().hex[:8]
    path = f"{folder.rstrip('/')}/{TEMP_MARK}probe-Ab-{tag}"
    if not _create(sftp, path):
        return None
    try:
        precision = _precision(sftp, path)
        case_insensitive = _exists(sftp, path.replace("probe-Ab-", "probe-aB-"))
        windows_names = not _can_create(sftp, f"{folder.rstrip('/')}/{TEMP_MARK}probe-{tag}-a:b")
        symlinks = _can_symlink(sftp, f"{folder.rstrip('/')}/{TEMP_MARK}link-{tag}")
    finally:
        _remove(sftp, path)
    fat_like = windows_names and not symlinks  # exFAT or FAT: NTFS (ntfs-3g) holds symlinks
    return DestFacts(
        fs_type=SERVER_DISK if windows_names or case_insensitive else "",
        mtime_precision_ns=precision,
        case_insensitive=case_insensitive,
        symlinks=symlinks,
        windows_names=windows_names,
        max_file_size=None,  # FAT32's 4 GiB cannot be told from exFAT's none without writing 4 GiB
        mtime_min_ns=FAT_EPOCH_NS if fat_like else None,
        mtime_max_ns=FAT_END_NS if fat_like else None,
    )


def _create(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.open(path, "wx").close()
    except OSError:
        return False
    return True


def _can_create(sftp: paramiko.SFTPClient, path: str) -> bool:
    if not _create(sftp, path):
        return False
    _remove(sftp, path)
    return True


def _precision(sftp: paramiko.SFTPClient, path: str) -> int:
    """SFTP carries whole seconds: 1 s, or 2 s where an odd second is not kept (FAT)."""
    try:
        sftp.utime(path, (PROBE_SECONDS, PROBE_SECONDS))
        kept = sftp.stat(path).st_mtime
    except OSError:
        return SECOND
    return SECOND if kept == PROBE_SECONDS else 2 * SECOND


def _exists(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.lstat(path)
    except OSError:
        return False
    return True


def _can_symlink(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.symlink("target", path)
    except OSError:
        return False
    _remove(sftp, path)
    return True


def _remove(sftp: paramiko.SFTPClient, path: str) -> None:
    try:
        sftp.remove(path)
    except OSError:
        pass
