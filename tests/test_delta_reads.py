"""A full upload of a large file reads it once (issue 26): the block map a
later delta needs is taken on the pass that reads the file to send it, not on
a pass of its own before. Counted on a real file sent to the real sshd: the
bytes every read call of this process (os.preadv, os.pread, os.read) got from
that file, by its inode; nothing of the file system or SFTP is replaced."""

from __future__ import annotations

import os
import random
from dataclasses import replace

import pytest

from reconcile.blockmap import BlockStore, map_fd
from reconcile.entry import Entry
from reconcile.remotes import open_remote
from tests.mirror import write
from tests.storage import read_dest

MiB = 1 << 20
BLOCK = 8 * MiB
SIZE = 72 * MiB  # above the 64 MiB threshold (so the first upload is mapped) and RANGE_MIN
T0 = 1_600_000_000 * 10**9


class ReadCounter:
    """bytes read from one file (by device and inode) through os's read calls"""

    def __init__(self, monkeypatch, path) -> None:
        st = os.stat(path)
        self.file, self.bytes = (st.st_dev, st.st_ino), 0
        for name in ("preadv", "pread", "read"):
            monkeypatch.setattr(os, name, self._counting(getattr(os, name)))

    def _counting(self, call):
        def counted(fd, *args):
            got = call(fd, *args)
            try:
                st = os.fstat(fd)
            except OSError:
                return got
            if (st.st_dev, st.st_ino) == self.file:
                self.bytes += got if isinstance(got, int) else len(got)
            return got
        return counted


def entry_of(path, rel: str) -> Entry:
    st = path.stat()
    return Entry(rel, size=st.st_size, mtime_ns=st.st_mtime_ns)


@pytest.mark.parametrize("transfers", [1, 4])
def test_a_full_upload_maps_the_file_on_the_pass_that_sends_it(sftp_dest, tmp_path, monkeypatch, transfers):
    """one stream: the file is read once (twice before: its block map, then
    the upload). Four range writers: the writers' reads and one hashing pass
    that now maps the file too (three before)"""
    local = tmp_path / "disk.img"
    data = bytearray(random.randbytes(SIZE))
    write(local, bytes(data), T0)
    options = replace(sftp_dest.options, transfers=transfers)
    remote = open_remote(sftp_dest.url, options)
    try:
        reads = ReadCounter(monkeypatch, local)
        sent = remote.upload(str(local), "disk.img", entry_of(local, "disk.img"))
        monkeypatch.undo()
        assert reads.bytes == SIZE * (1 if transfers == 1 else 2), reads.bytes / SIZE
        with open(local, "rb") as f:
            whole = map_fd(f.fileno(), SIZE)
        assert BlockStore(options.state_dir).get("disk.img")[0] == whole and sent.hash == whole.digest

        data[3 * BLOCK:3 * BLOCK + 10] = b"d" * 10  # the map taken on the way serves the next delta
        write(local, bytes(data), T0 + 10**9)
        again = remote.upload(str(local), "disk.img", entry_of(local, "disk.img"))
    finally:
        remote.close()
    assert again.reused == SIZE - BLOCK
    stored = read_dest(sftp_dest)
    assert stored.files["disk.img"] == data and not stored.temps

